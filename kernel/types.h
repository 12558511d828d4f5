// Strong types for positions and ids. A log partition, a sequence number, a Kafka
// offset and a stream version are different things; mixing them up is a compile error.
#ifndef CITYOPS_KERNEL_TYPES_H_
#define CITYOPS_KERNEL_TYPES_H_

#include <compare>
#include <cstdint>
#include <ostream>

namespace cityops::kernel {

// A value of type T that only compares with, and converts from, its own kind.
template <typename T, typename Tag>
class NamedValue {
 public:
  using value_type = T;
  constexpr NamedValue() = default;
  constexpr explicit NamedValue(T v) : value_(v) {}
  constexpr T value() const { return value_; }
  constexpr auto operator<=>(const NamedValue&) const = default;
  constexpr NamedValue next() const { return NamedValue(value_ + 1); }

  template <typename H>
  friend H AbslHashValue(H h, NamedValue v) {
    return H::combine(std::move(h), v.value_);
  }
  friend std::ostream& operator<<(std::ostream& os, NamedValue v) { return os << v.value_; }

 private:
  T value_{};
};

// A partition of the event log; mirrors the partition of the input topic.
using Partition = NamedValue<uint32_t, struct PartitionTag>;
// A position within one partition of the log. Dense, starting at 0.
using Sequence = NamedValue<uint64_t, struct SequenceTag>;
// A Kafka record offset within one topic partition.
using KafkaOffset = NamedValue<int64_t, struct KafkaOffsetTag>;
// The version of an indexed stream: the number of events in it. 0 = no events yet.
using StreamVersion = NamedValue<uint64_t, struct StreamVersionTag>;

// Where an event sits in the log.
struct EventPosition {
  Partition partition;
  Sequence sequence;
  auto operator<=>(const EventPosition&) const = default;
};

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_TYPES_H_
