// The `cityops` command. Parsing and the work live in app/cli.h and the functions it calls.
#include <iostream>

#include "app/cli.h"

int main(int argc, char** argv) { return cityops::app::RunCli(argc, argv, std::cout, std::cerr); }
