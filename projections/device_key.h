// Device ids as hash-map keys, for the per-reading lookups of the rules engine and the
// read models.
//
// A lookup by id hashes the id and compares it with the stored key. With std::string
// keys that compare follows a pointer to the key's heap buffer (device ids are typically
// 16 bytes, one more than std::string keeps inline): one more cache miss per reading
// across tens of thousands of devices. `DeviceKey` keeps ids of up to 31 bytes inline, so
// in a node map the key sits beside the value it finds. Lookups take a string_view and
// build no key (heterogeneous lookup).
#ifndef CITYOPS_PROJECTIONS_DEVICE_KEY_H_
#define CITYOPS_PROJECTIONS_DEVICE_KEY_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/container/inlined_vector.h"
#include "absl/container/node_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"

namespace cityops::projections {

class DeviceKey {
 public:
  explicit DeviceKey(std::string_view id) : bytes_(id.begin(), id.end()) {}
  std::string_view view() const { return std::string_view(bytes_.data(), bytes_.size()); }
  std::string str() const { return std::string(view()); }

 private:
  absl::InlinedVector<char, 31> bytes_;
};

struct DeviceKeyHash {
  using is_transparent = void;
  size_t operator()(std::string_view id) const {
    return absl::Hash<absl::string_view>()(absl::string_view(id.data(), id.size()));
  }
  size_t operator()(const DeviceKey& key) const { return (*this)(key.view()); }
  size_t operator()(const std::string& id) const { return (*this)(std::string_view(id)); }
};

struct DeviceKeyEq {
  using is_transparent = void;
  static std::string_view View(std::string_view id) { return id; }
  static std::string_view View(const DeviceKey& key) { return key.view(); }
  static std::string_view View(const std::string& id) { return id; }
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return View(a) == View(b);
  }
};

// Values stay where they are (node map): callers may hold references across inserts.
template <typename Value>
using DeviceMap = absl::node_hash_map<DeviceKey, Value, DeviceKeyHash, DeviceKeyEq>;

}  // namespace cityops::projections

#endif  // CITYOPS_PROJECTIONS_DEVICE_KEY_H_
