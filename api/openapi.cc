#include "api/openapi.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "api/routes.h"
#include "cityops/v1/api.pb.h"
#include "yaml-cpp/yaml.h"

namespace cityops::api {

namespace {

namespace pb = google::protobuf;

std::string SchemaName(const pb::Descriptor* d) { return d->name(); }

std::string Ref(const pb::Descriptor* d) { return "#/components/schemas/" + SchemaName(d); }

// The schema of one field's value (not repeated), by the protobuf JSON mapping.
void EmitValueSchema(const pb::FieldDescriptor* f, YAML::Emitter& out,
                     std::vector<const pb::Descriptor*>* pending) {
  out << YAML::BeginMap;
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_STRING:
      out << YAML::Key << "type" << YAML::Value << "string";
      if (f->type() == pb::FieldDescriptor::TYPE_BYTES) {
        out << YAML::Key << "format" << YAML::Value << "byte";
      }
      break;
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      out << YAML::Key << "type" << YAML::Value << "boolean";
      break;
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      out << YAML::Key << "type" << YAML::Value << "number";
      break;
    case pb::FieldDescriptor::CPPTYPE_INT32:
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      out << YAML::Key << "type" << YAML::Value << "integer";
      out << YAML::Key << "format" << YAML::Value << "int32";
      break;
    case pb::FieldDescriptor::CPPTYPE_INT64:
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      // The JSON mapping writes 64-bit integers as strings.
      out << YAML::Key << "type" << YAML::Value << "string";
      out << YAML::Key << "format" << YAML::Value << "int64";
      break;
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      out << YAML::Key << "type" << YAML::Value << "string";
      out << YAML::Key << "enum" << YAML::Value << YAML::Flow << YAML::BeginSeq;
      for (int i = 0; i < f->enum_type()->value_count(); ++i) {
        out << f->enum_type()->value(i)->name();
      }
      out << YAML::EndSeq;
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE: {
      const pb::Descriptor* m = f->message_type();
      if (m->full_name() == "google.protobuf.Timestamp") {
        out << YAML::Key << "type" << YAML::Value << "string";
        out << YAML::Key << "format" << YAML::Value << "date-time";
      } else if (m->full_name() == "google.protobuf.Duration") {
        out << YAML::Key << "type" << YAML::Value << "string";
        out << YAML::Key << "description" << YAML::Value << "seconds with an s suffix, e.g. 1.5s";
      } else {
        out << YAML::Key << "$ref" << YAML::Value << Ref(m);
        pending->push_back(m);
      }
      break;
    }
  }
  out << YAML::EndMap;
}

void EmitMessageSchema(const pb::Descriptor* d, YAML::Emitter& out,
                       std::vector<const pb::Descriptor*>* pending) {
  out << YAML::Key << SchemaName(d) << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "type" << YAML::Value << "object";
  out << YAML::Key << "description" << YAML::Value
      << absl::StrCat(d->full_name(), " (", d->file()->name(), ")");
  out << YAML::Key << "additionalProperties" << YAML::Value << false;
  out << YAML::Key << "properties" << YAML::Value << YAML::BeginMap;
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    out << YAML::Key << f->json_name() << YAML::Value;
    if (f->is_repeated()) {
      out << YAML::BeginMap << YAML::Key << "type" << YAML::Value << "array";
      out << YAML::Key << "items" << YAML::Value;
      EmitValueSchema(f, out, pending);
      out << YAML::EndMap;
    } else {
      EmitValueSchema(f, out, pending);
    }
  }
  out << YAML::EndMap;
  out << YAML::EndMap;
}

void EmitParameter(const QueryParam& q, const char* in, YAML::Emitter& out) {
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << q.name;
  out << YAML::Key << "in" << YAML::Value << in;
  out << YAML::Key << "required" << YAML::Value << (std::string(in) == "path");
  out << YAML::Key << "description" << YAML::Value << q.description;
  out << YAML::Key << "schema" << YAML::Value << YAML::BeginMap;
  if (q.type == "date-time") {
    out << YAML::Key << "type" << YAML::Value << "string";
    out << YAML::Key << "format" << YAML::Value << "date-time";
  } else {
    out << YAML::Key << "type" << YAML::Value << q.type;
  }
  if (!q.values.empty()) {
    out << YAML::Key << "enum" << YAML::Value << YAML::Flow << q.values;
  }
  out << YAML::EndMap;
  out << YAML::EndMap;
}

void EmitResponse(const char* code, const char* description, const pb::Descriptor* d,
                  const std::string& content_type, YAML::Emitter& out) {
  out << YAML::Key << code << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "description" << YAML::Value << description;
  out << YAML::Key << "content" << YAML::Value << YAML::BeginMap;
  if (d != nullptr) {
    out << YAML::Key << "application/json" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "schema" << YAML::Value << YAML::BeginMap << YAML::Key << "$ref"
        << YAML::Value << Ref(d) << YAML::EndMap;
    out << YAML::EndMap;
  } else {
    out << YAML::Key << content_type << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "schema" << YAML::Value << YAML::BeginMap << YAML::Key << "type"
        << YAML::Value << "string" << YAML::EndMap;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  out << YAML::EndMap;
}

std::string Generate() {
  const pb::Descriptor* error = v1::ErrorResponse::descriptor();
  std::vector<const pb::Descriptor*> pending = {error};
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "openapi" << YAML::Value << "3.0.3";
  out << YAML::Key << "info" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "title" << YAML::Value << "cityops HTTP API";
  out << YAML::Key << "version" << YAML::Value << "v1";
  out << YAML::Key << "description" << YAML::Value
      << "Generated from the route table (api/routes.cc) and the cityops.v1 protobuf schemas; "
         "`cityops openapi` prints it and tests/api_test.cc checks that api/openapi.yaml is "
         "current. Bodies are JSON by the protobuf JSON mapping. Errors are ErrorResponse with "
         "the status of their canonical code. Send `Authorization: Bearer <token>`; roles: "
         "viewer < operator < supervisor < admin.";
  out << YAML::EndMap;
  out << YAML::Key << "security" << YAML::Value << YAML::BeginSeq << YAML::BeginMap << YAML::Key
      << "bearer" << YAML::Value << YAML::Flow << YAML::BeginSeq << YAML::EndSeq << YAML::EndMap
      << YAML::EndSeq;
  // The paths name the schemas the components then list.
  YAML::Emitter& paths = out;
  paths << YAML::Key << "paths" << YAML::Value << YAML::BeginMap;
  std::string last_path;
  for (const Route& r : Routes()) {
    if (r.path != last_path) {
      if (!last_path.empty()) paths << YAML::EndMap;
      paths << YAML::Key << r.path << YAML::Value << YAML::BeginMap;
      last_path = r.path;
    }
    paths << YAML::Key << absl::AsciiStrToLower(r.method) << YAML::Value << YAML::BeginMap;
    paths << YAML::Key << "summary" << YAML::Value << r.summary;
    paths << YAML::Key << "x-cityops-role" << YAML::Value
          << (r.role == v1::ROLE_UNSPECIFIED
                  ? std::string("none")
                  : absl::AsciiStrToLower(v1::Role_Name(r.role).substr(5)));
    if (r.role == v1::ROLE_UNSPECIFIED) {
      paths << YAML::Key << "security" << YAML::Value << YAML::Flow << YAML::BeginSeq
            << YAML::EndSeq;
    }
    std::vector<QueryParam> path_params;
    for (size_t i = r.path.find('{'); i != std::string::npos; i = r.path.find('{', i + 1)) {
      const std::string name = r.path.substr(i + 1, r.path.find('}', i) - i - 1);
      QueryParam p{name, "string", name, {}};
      for (const QueryParam& v : r.path_values) {
        if (v.name == name) p = v;
      }
      path_params.push_back(p);
    }
    if (!path_params.empty() || !r.query.empty()) {
      paths << YAML::Key << "parameters" << YAML::Value << YAML::BeginSeq;
      for (const QueryParam& p : path_params) EmitParameter(p, "path", paths);
      for (const QueryParam& q : r.query) EmitParameter(q, "query", paths);
      paths << YAML::EndSeq;
    }
    if (r.request != nullptr) {
      pending.push_back(r.request);
      paths << YAML::Key << "requestBody" << YAML::Value << YAML::BeginMap;
      paths << YAML::Key << "required" << YAML::Value << true;
      paths << YAML::Key << "content" << YAML::Value << YAML::BeginMap;
      paths << YAML::Key << "application/json" << YAML::Value << YAML::BeginMap;
      paths << YAML::Key << "schema" << YAML::Value << YAML::BeginMap << YAML::Key << "$ref"
            << YAML::Value << Ref(r.request) << YAML::EndMap;
      paths << YAML::EndMap << YAML::EndMap << YAML::EndMap;
    }
    if (r.response != nullptr) pending.push_back(r.response);
    paths << YAML::Key << "responses" << YAML::Value << YAML::BeginMap;
    EmitResponse(r.id == RouteId::kReport || r.id == RouteId::kBackup ? "201" : "200", "Success",
                 r.response, r.content_type, paths);
    EmitResponse("default", "An error: what went wrong, where, and what to do", error, "", paths);
    paths << YAML::EndMap;
    paths << YAML::EndMap;
  }
  if (!last_path.empty()) paths << YAML::EndMap;
  paths << YAML::EndMap;

  out << YAML::Key << "components" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "securitySchemes" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "bearer" << YAML::Value << YAML::BeginMap << YAML::Key << "type"
      << YAML::Value << "http" << YAML::Key << "scheme" << YAML::Value << "bearer" << YAML::EndMap;
  out << YAML::EndMap;
  // Every message reachable from the routes, by name.
  out << YAML::Key << "schemas" << YAML::Value << YAML::BeginMap;
  std::set<std::string> done;
  std::vector<const pb::Descriptor*> order;
  while (!pending.empty()) {
    const pb::Descriptor* d = pending.back();
    pending.pop_back();
    if (!done.insert(SchemaName(d)).second) continue;
    order.push_back(d);
    for (int i = 0; i < d->field_count(); ++i) {
      const pb::Descriptor* m = d->field(i)->message_type();
      if (m != nullptr && m->file()->package() == "cityops.v1") pending.push_back(m);
    }
  }
  std::sort(order.begin(), order.end(),
            [](const pb::Descriptor* a, const pb::Descriptor* b) { return a->name() < b->name(); });
  std::vector<const pb::Descriptor*> unused;
  for (const pb::Descriptor* d : order) EmitMessageSchema(d, out, &unused);
  out << YAML::EndMap;  // schemas
  out << YAML::EndMap;  // components
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace

const std::string& OpenApiYaml() {
  static const std::string* doc = new std::string(Generate());
  return *doc;
}

}  // namespace cityops::api
