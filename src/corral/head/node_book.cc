#include "corral/head/node_book.h"

#include <nlohmann/json.hpp>

#include "corral/base/files.h"
#include "corral/base/ids.h"

namespace corral::head {

Result<NodeBook> NodeBook::Open(std::string path) {
  NodeBook book;
  book.path_ = std::move(path);
  if (book.path_.empty()) return book;
  auto text = ReadFile(book.path_);
  if (!text) return book;  // none kept yet
  Status damaged = MakeStatus(Code::kFailedPrecondition,
                              "{} is damaged: fix it (removing it forgets every revoked node, whose certificates "
                              "would then work again, and every node's binding)",
                              book.path_);
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Err(damaged);
  const nlohmann::json& caps = j["caps"];
  const nlohmann::json& revoked = j["revoked"];
  const nlohmann::json& joined = j["joined"];
  if (!(caps.is_object() || caps.is_null()) || !(revoked.is_array() || revoked.is_null()) ||
      !(joined.is_object() || joined.is_null()))
    return Err(damaged);
  if (caps.is_object()) {
    for (auto it = caps.begin(); it != caps.end(); ++it) {
      auto id = FromHex(it.key());
      if (!id || !it.value().is_object()) return Err(damaged);
      Caps amounts;
      for (auto a = it.value().begin(); a != it.value().end(); ++a)
        if (a.value().is_number()) amounts[a.key()] = a.value().get<double>();
      book.caps_[*id] = std::move(amounts);
    }
  }
  if (revoked.is_array()) {
    for (const auto& hex : revoked) {
      auto id = hex.is_string() ? FromHex(hex.get<std::string>()) : std::nullopt;
      if (!id) return Err(damaged);
      book.revoked_.insert(*id);
    }
  }
  if (joined.is_object()) {
    for (auto it = joined.begin(); it != joined.end(); ++it) {
      auto id = FromHex(it.key());
      if (!id || !it.value().is_object()) return Err(damaged);
      const nlohmann::json& j = it.value();
      if ((j.contains("since_ns") && !j["since_ns"].is_number_integer()) ||
          (j.contains("token") && !j["token"].is_string()) || (j.contains("token_id") && !j["token_id"].is_string()) ||
          (j.contains("certificate") && !j["certificate"].is_boolean()) || (j.contains("key") && !j["key"].is_string()))
        return Err(damaged);
      book.joined_[*id] = Joined{j.contains("since_ns") ? j["since_ns"].get<int64_t>() : 0,
                                 j.contains("token") ? j["token"].get<std::string>() : "",
                                 j.contains("token_id") ? j["token_id"].get<std::string>() : "",
                                 j.contains("certificate") ? j["certificate"].get<bool>() : true,
                                 j.contains("key") ? j["key"].get<std::string>() : ""};
    }
  }
  return book;
}

Status NodeBook::Save(const std::map<std::string, Caps>& caps, const std::set<std::string>& revoked,
                      const std::map<std::string, Joined>& joined) const {
  if (path_.empty()) return Status::Ok();
  nlohmann::json j = {{"caps", nlohmann::json::object()},
                      {"revoked", nlohmann::json::array()},
                      {"joined", nlohmann::json::object()}};
  for (const auto& [node, c] : caps) j["caps"][Hex(node)] = c;
  for (const auto& node : revoked) j["revoked"].push_back(Hex(node));
  for (const auto& [node, how] : joined)
    j["joined"][Hex(node)] = {
        {"since_ns", how.since_ns}, {"token", how.token}, {"token_id", how.token_id}, {"certificate", how.certificate},
        {"key", how.key}};
  return WriteFile(path_, j.dump(1) + "\n", 0600);
}

Status NodeBook::SetCaps(const std::string& id, Caps caps) {
  auto all = caps_;
  if (caps.empty()) all.erase(id);
  else all[id] = std::move(caps);
  if (Status s = Save(all, revoked_, joined_); !s.ok()) return s;
  caps_ = std::move(all);
  return Status::Ok();
}

Status NodeBook::Revoke(const std::string& id) {
  auto revoked = revoked_;
  revoked.insert(id);
  if (Status s = Save(caps_, revoked, joined_); !s.ok()) return s;
  revoked_ = std::move(revoked);
  return Status::Ok();
}

Status NodeBook::RecordJoin(const std::string& id, Joined how) {
  auto joined = joined_;
  joined[id] = std::move(how);
  if (Status s = Save(caps_, revoked_, joined); !s.ok()) return s;
  joined_ = std::move(joined);
  return Status::Ok();
}

}  // namespace corral::head
