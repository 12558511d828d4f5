#include "projections/derived_diff.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/text_format.h"
#include "kernel/proto_time.h"

namespace cityops::projections {
namespace {

constexpr char kRulesStage[] = "rules";  // rules::kRulesStage; projections may not use rules/.
// Identities cached per reader before the cache is dropped (bounded memory).
constexpr size_t kMaxCachedIdentities = 200'000;

std::string DeterministicBytes(const v1::Event& e) {
  std::string bytes;
  google::protobuf::io::StringOutputStream stream(&bytes);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  e.SerializeToCodedStream(&coded);
  return bytes;
}

struct Identity {
  std::string text;
  bool tick = false;
};

// The selected derived events of one partition of one log, identified, in order.
class DerivedReader {
 public:
  DerivedReader(const kernel::EventLog& log, kernel::Partition partition,
                const DerivedDiffOptions& options)
      : log_(log), partition_(partition), options_(options) {}

  // The next selected derived event, or nullopt at the partition's end.
  absl::StatusOr<std::optional<IdentifiedEvent>> Next() {
    for (;;) {
      if (pos_ == chunk_.size()) {
        if (end_) return std::nullopt;
        absl::StatusOr<std::vector<v1::Event>> read =
            log_.Read(partition_, next_, std::max<size_t>(options_.chunk, 1));
        if (!read.ok()) return read.status();
        chunk_ = *std::move(read);
        pos_ = 0;
        if (chunk_.empty()) {
          end_ = true;
          return std::nullopt;
        }
        next_ = kernel::Sequence(chunk_.back().sequence() + 1);
        if (cache_.size() > kMaxCachedIdentities) cache_.clear();
        for (const v1::Event& e : chunk_) {
          cache_[{e.partition(), e.sequence()}] = {EventIdentity(e), e.has_clock_tick()};
        }
      }
      const v1::Event& e = chunk_[pos_++];
      if (!IsDerivedEvent(e) || kernel::FromTimestamp(e.event_time()) > options_.until) continue;
      IdentifiedEvent out;
      out.event = e;
      out.event.clear_sequence();
      out.event.clear_recorded_time();
      if (absl::Status s = IdentifyRefs(&out.event, "", &out); !s.ok()) return s;
      return out;
    }
  }

 private:
  absl::StatusOr<Identity> IdentityOf(const v1::EventRef& ref) {
    auto it = cache_.find({ref.partition(), ref.sequence()});
    if (it != cache_.end()) return it->second;
    absl::StatusOr<std::vector<v1::Event>> read =
        log_.Read(kernel::Partition(ref.partition()), kernel::Sequence(ref.sequence()), 1);
    if (!read.ok()) return read.status();
    Identity id;
    if (read->empty() || read->front().sequence() != ref.sequence()) {
      id.text = absl::StrCat("missing ", ref.partition(), "/", ref.sequence());
    } else {
      id.text = EventIdentity(read->front());
      id.tick = read->front().has_clock_tick();
    }
    cache_[{ref.partition(), ref.sequence()}] = id;
    return id;
  }

  // Replaces every EventRef inside `m`, at any depth, by its identity in `out->refs`.
  absl::Status IdentifyRefs(google::protobuf::Message* m, const std::string& path,
                            IdentifiedEvent* out) {
    const google::protobuf::Reflection* reflection = m->GetReflection();
    std::vector<const google::protobuf::FieldDescriptor*> fields;
    reflection->ListFields(*m, &fields);
    for (const google::protobuf::FieldDescriptor* f : fields) {
      if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) continue;
      const bool is_ref = f->message_type() == v1::EventRef::descriptor();
      const int n = f->is_repeated() ? reflection->FieldSize(*m, f) : 1;
      for (int i = 0; i < n; ++i) {
        google::protobuf::Message* sub = f->is_repeated()
                                             ? reflection->MutableRepeatedMessage(m, f, i)
                                             : reflection->MutableMessage(m, f);
        std::string sub_path = absl::StrCat(path, path.empty() ? "" : ".", f->name());
        if (f->is_repeated()) absl::StrAppend(&sub_path, "[", i, "]");
        if (!is_ref) {
          if (absl::Status s = IdentifyRefs(sub, sub_path, out); !s.ok()) return s;
          continue;
        }
        auto* ref = static_cast<v1::EventRef*>(sub);
        absl::StatusOr<Identity> id = IdentityOf(*ref);
        if (!id.ok()) return id.status();
        out->refs.push_back(absl::StrCat(sub_path, "=", id->text));
        out->cites_tick = out->cites_tick || id->tick;
        ref->Clear();
      }
    }
    return absl::OkStatus();
  }

  const kernel::EventLog& log_;
  const kernel::Partition partition_;
  const DerivedDiffOptions& options_;
  kernel::Sequence next_{0};
  std::vector<v1::Event> chunk_;
  size_t pos_ = 0;
  bool end_ = false;
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, Identity> cache_;
};

std::vector<kernel::Partition> UnionOfPartitions(const kernel::EventLog& a,
                                                 const kernel::EventLog& b) {
  std::vector<kernel::Partition> out = a.Partitions();
  for (kernel::Partition p : b.Partitions()) out.push_back(p);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace

bool IsDerivedEvent(const v1::Event& event) { return event.provenance().stage() == kRulesStage; }

std::string EventIdentity(const v1::Event& e) {
  const v1::Provenance& p = e.provenance();
  if (p.has_kafka()) {
    return absl::StrCat(p.kafka().topic(), "/", p.kafka().partition(), "@", p.kafka().offset());
  }
  if (e.has_clock_tick()) {
    return absl::StrCat(
        "tick@", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", kernel::FromTimestamp(e.event_time()),
                                  absl::UTCTimeZone()));
  }
  if (e.has_ruleset_activated()) {
    return absl::StrCat("ruleset/", e.ruleset_activated().name(), "/",
                        e.ruleset_activated().sha256());
  }
  if (!p.idempotency_key().empty()) return p.idempotency_key();
  return absl::StrCat("stream ", e.stream_id(), " v", e.stream_version());
}

std::string IdentifiedEvent::Text() const {
  google::protobuf::TextFormat::Printer printer;
  printer.SetSingleLineMode(true);
  std::string text;
  printer.PrintToString(event, &text);
  while (!text.empty() && text.back() == ' ') text.pop_back();
  std::string out = absl::StrCat("{", text, "}");
  for (const std::string& r : refs) absl::StrAppend(&out, " ", r);
  return out;
}

bool IdentifiedEvent::operator==(const IdentifiedEvent& other) const {
  return refs == other.refs && DeterministicBytes(event) == DeterministicBytes(other.event);
}

absl::StatusOr<DerivedDiff> CompareDerived(const kernel::EventLog& a, const kernel::EventLog& b,
                                           const DerivedDiffOptions& options,
                                           const std::string& a_name, const std::string& b_name) {
  DerivedDiff diff;
  for (kernel::Partition p : UnionOfPartitions(a, b)) {
    DerivedReader x(a, p, options);
    DerivedReader y(b, p, options);
    for (uint64_t index = 0;; ++index) {
      absl::StatusOr<std::optional<IdentifiedEvent>> ex = x.Next();
      if (!ex.ok()) return ex.status();
      absl::StatusOr<std::optional<IdentifiedEvent>> ey = y.Next();
      if (!ey.ok()) return ey.status();
      if (!ex->has_value() && !ey->has_value()) break;
      for (const std::optional<IdentifiedEvent>* e : {&*ex, &*ey}) {
        if (!e->has_value() || !(*e)->cites_tick) continue;
        ++diff.citing_ticks;
        if (diff.tick_examples.size() < DerivedDiff::kTickExamples) {
          diff.tick_examples.push_back((*e)->Text());
        }
      }
      if (ex->has_value() && ey->has_value() && **ex == **ey) {
        ++diff.equal;
        continue;
      }
      diff.difference = absl::StrCat(
          "derived events differ in partition ", p.value(), " at its derived event ", index, " (",
          diff.equal, " equal before it in all)\n  ", a_name, ": ",
          ex->has_value() ? (*ex)->Text() : "(none: its derived events end here)", "\n  ", b_name,
          ": ", ey->has_value() ? (*ey)->Text() : "(none: its derived events end here)", "\n");
      return diff;
    }
  }
  return diff;
}

absl::StatusOr<std::vector<std::vector<IdentifiedEvent>>> DerivedByIdentity(
    const kernel::EventLog& log, const DerivedDiffOptions& options) {
  std::vector<std::vector<IdentifiedEvent>> out;
  for (kernel::Partition p : log.Partitions()) {
    if (out.size() <= p.value()) out.resize(p.value() + 1);
    DerivedReader reader(log, p, options);
    for (;;) {
      absl::StatusOr<std::optional<IdentifiedEvent>> e = reader.Next();
      if (!e.ok()) return e.status();
      if (!e->has_value()) break;
      out[p.value()].push_back(**std::move(e));
    }
  }
  return out;
}

}  // namespace cityops::projections
