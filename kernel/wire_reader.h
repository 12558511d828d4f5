// Walking protobuf wire format without parsing into messages.
//
// The log stores each event as a serialized `cityops.v1.Event` (LOG_FORMAT.md). Code that
// handles many stored events and needs little of each (the log copying stored records,
// the stages' fast paths) reads the fields it wants straight from the bytes with this
// cursor, allocating nothing.
#ifndef CITYOPS_KERNEL_WIRE_READER_H_
#define CITYOPS_KERNEL_WIRE_READER_H_

#include <cstdint>
#include <cstring>
#include <string_view>

namespace cityops::kernel {

// A cursor over protobuf wire format: for the log's own rewriting of stored records
// (AppendBatch::AddStored) and the stages' decoders (projections/stored_event.h,
// `rules::Reading`). Every read checks bounds; `ok()` turns false for good at the first
// malformed byte.
class WireReader {
 public:
  explicit WireReader(std::string_view bytes)
      : p_(reinterpret_cast<const uint8_t*>(bytes.data())), end_(p_ + bytes.size()) {}

  bool done() const { return p_ == end_; }
  bool ok() const { return ok_; }
  // Where the next read starts: with a position taken before a field, the field's bytes.
  const char* position() const { return reinterpret_cast<const char*>(p_); }

  bool Varint(uint64_t* v) {
    uint64_t result = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return ok_ = false;
      const uint8_t b = *p_++;
      result |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        *v = result;
        return true;
      }
    }
    return ok_ = false;
  }

  // The next field's number and wire type.
  bool Tag(uint32_t* field, uint32_t* type) {
    uint64_t tag = 0;
    if (!Varint(&tag) || tag >> 3 == 0 || tag >> 3 > 0x1fffffff) return ok_ = false;
    *field = static_cast<uint32_t>(tag >> 3);
    *type = static_cast<uint32_t>(tag & 7);
    return true;
  }

  // A length-delimited field's bytes.
  bool Bytes(std::string_view* out) {
    uint64_t n = 0;
    if (!Varint(&n) || n > static_cast<uint64_t>(end_ - p_)) return ok_ = false;
    *out = std::string_view(reinterpret_cast<const char*>(p_), static_cast<size_t>(n));
    p_ += n;
    return true;
  }

  // Little-endian, as the wire format and every platform cityops builds for.
  bool Fixed64(uint64_t* v) {
    if (end_ - p_ < 8) return ok_ = false;
    std::memcpy(v, p_, 8);
    p_ += 8;
    return true;
  }

  bool Fixed32(uint32_t* v) {
    if (end_ - p_ < 4) return ok_ = false;
    std::memcpy(v, p_, 4);
    p_ += 4;
    return true;
  }

  // Skips a field of wire type `type`.
  bool Skip(uint32_t type) {
    uint64_t v64 = 0;
    uint32_t v32 = 0;
    std::string_view bytes;
    switch (type) {
      case 0:
        return Varint(&v64);
      case 1:
        return Fixed64(&v64);
      case 2:
        return Bytes(&bytes);
      case 5:
        return Fixed32(&v32);
      default:  // Groups (never written by proto3) and invalid types.
        return ok_ = false;
    }
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
  bool ok_ = true;
};

}  // namespace cityops::kernel

#endif  // CITYOPS_KERNEL_WIRE_READER_H_
