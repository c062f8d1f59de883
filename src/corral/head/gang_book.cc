#include "corral/head/gang_book.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "corral/base/ids.h"
#include "corral/base/log.h"

namespace corral::head {
namespace {

constexpr double kMarker = 1000;
constexpr double kMarkerShare = 0.001;
constexpr size_t kMaxBundles = 1024;

std::string Prefix(const std::string& gang_id) { return "gang:" + Hex(gang_id); }

// What bundle i of the gang adds to its node while reserved.
ResourceSet Named(const std::string& gang_id, size_t i, const ResourceSet& bundle) {
  std::string p = Prefix(gang_id), pi = fmt::format("{}:{}", p, i);
  ResourceSet out;
  for (const auto& [name, units] : bundle.units()) {
    out.Set(pi + ":" + name, bundle.Get(name));
    out.Set(p + ":" + name, bundle.Get(name));
  }
  out.Set(pi, kMarker);
  out.Set(p, kMarker);
  return out;
}

}  // namespace

ResourceSet GangRequestFor(const std::string& gang_id, int member, const ResourceSet& resources) {
  std::string p = Prefix(gang_id), pi = fmt::format("{}:{}", p, member);
  ResourceSet out;
  for (const auto& [name, units] : resources.units()) {
    if (member >= 0) out.Set(pi + ":" + name, resources.Get(name));
    out.Set(p + ":" + name, resources.Get(name));
  }
  if (member >= 0) out.Set(pi, kMarkerShare);
  out.Set(p, kMarkerShare);
  return out;
}

bool IsGangResource(const std::string& name) { return name.starts_with("gang:"); }

Result<const GangBook::Gang*> GangBook::Create(const proto::GangRequest& request, const std::string& owner,
                                               const std::string& owner_token) {
  if (request.gang_id().empty()) return Err(Code::kInvalidArgument, "a gang needs an id");
  if (gangs_.contains(request.gang_id()))
    return Err(Code::kAlreadyExists, fmt::format("gang {} exists already", Hex(request.gang_id())));
  if (request.bundles().empty()) return Err(Code::kInvalidArgument, "a gang needs at least one member");
  if (static_cast<size_t>(request.bundles_size()) > kMaxBundles)
    return Err(Code::kInvalidArgument, fmt::format("a gang has at most {} members", kMaxBundles));
  auto strategy = ParseGangStrategy(request.strategy().empty() ? "pack" : request.strategy());
  if (!strategy) return Err(strategy.error());
  Gang g;
  g.id = request.gang_id();
  g.name = request.name();
  g.owner = owner;
  g.owner_token = owner_token;
  g.detached = request.detached();
  g.strategy = *strategy;
  g.created = nodes_.clock().BootTimeNs();
  for (int i = 0; i < request.bundles_size(); ++i) {
    ResourceSet b;
    for (const auto& [k, v] : request.bundles(i).resources()) {
      if (!(v >= 0) || IsGangResource(k))
        return Err(Code::kInvalidArgument, fmt::format("member {} of the gang asks {}={}: not a resource it may hold", i, k, v));
      if (k == kGpu && v > 1 && v != std::floor(v))
        return Err(Code::kInvalidArgument,
                   fmt::format("member {} of the gang asks GPU={}: above 1, ask whole devices", i, v));
      b.Set(k, v);
    }
    if (b.empty())
      return Err(Code::kInvalidArgument,
                 fmt::format("member {} of the gang asks for no resources: give it num_cpus, num_gpus, memory or "
                             "resources",
                             i));
    g.bundles.push_back(std::move(b));
  }
  g.nodes.assign(g.bundles.size(), "");
  auto [it, _] = gangs_.emplace(g.id, std::move(g));
  order_.push_back(it->first);
  ReservePending();
  return &it->second;
}

const GangBook::Gang* GangBook::Find(const std::string& id) const {
  auto it = gangs_.find(id);
  return it == gangs_.end() ? nullptr : &it->second;
}

void GangBook::Remove(const std::string& gang_id) {
  std::string id = gang_id;  // (callers may pass the gang's own id, which the erase frees)
  auto it = gangs_.find(id);
  if (it == gangs_.end()) return;
  if (it->second.state == State::kReady) Release(it->second, "removed");
  gangs_.erase(it);
  order_.erase(std::remove(order_.begin(), order_.end(), id), order_.end());
}

bool GangBook::HasPending() const {
  return std::any_of(gangs_.begin(), gangs_.end(), [](const auto& g) { return g.second.state == State::kPending; });
}

bool GangBook::ReservePending() {
  bool any = false;
  for (const std::string& id : order_) {
    Gang& g = gangs_.at(id);
    if (g.state != State::kPending) continue;
    GangPlan plan = PlanGang(g.bundles, g.strategy, nodes_.LiveViews());
    if (!plan.placed) {
      g.reason = g.lost.empty() ? plan.reason : g.lost + "; " + plan.reason;
      continue;
    }
    Reserve(g, plan.nodes);
    any = true;
  }
  return any;
}

void GangBook::Reserve(Gang& g, const std::vector<const NodeView*>& where) {
  for (size_t i = 0; i < g.bundles.size(); ++i) {
    Node* n = nodes_.Find(where[i]->id);
    ResourceSet named = Named(g.id, i, g.bundles[i]);
    n->view.available.Subtract(g.bundles[i]);
    n->reserved_plain.Add(g.bundles[i]);
    n->view.holds_gang = true;
    n->reserved.Add(named);
    n->view.total.Add(named);
    n->view.available.Add(named);
    g.nodes[i] = n->view.id;
  }
  g.state = State::kReady;
  g.reason.clear();
  g.lost.clear();
  LOG_INFO("gang {}{} reserved: {} member(s), {}", ShortHex(g.id), g.name.empty() ? "" : " (" + g.name + ")",
           g.bundles.size(), GangStrategyName(g.strategy));
}

void GangBook::Release(Gang& g, const std::string& why) {
  for (size_t i = 0; i < g.bundles.size(); ++i) {
    Node* n = g.nodes[i].empty() ? nullptr : nodes_.Find(g.nodes[i]);
    g.nodes[i].clear();
    if (!n) continue;
    ResourceSet named = Named(g.id, i, g.bundles[i]);
    n->reserved.Subtract(named);
    n->view.total.Subtract(named);
    // What its tasks still hold of it comes back when they end (ReleaseResources adds it to an
    // amount now negative): the names then vanish.
    n->view.available.Subtract(named);
    n->view.available.Add(g.bundles[i]);
    n->reserved_plain.Subtract(g.bundles[i]);
    n->view.holds_gang = !n->reserved.empty();
  }
  g.state = State::kPending;
  LOG_INFO("gang {} released: {}", ShortHex(g.id), why);
}

std::vector<std::string> GangBook::NodeGone(const std::string& node_id) {
  std::vector<std::string> released;
  for (auto& [id, g] : gangs_)
    if (g.state == State::kReady && std::find(g.nodes.begin(), g.nodes.end(), node_id) != g.nodes.end()) {
      Release(g, fmt::format("node {} is gone", ShortHex(node_id)));
      g.lost = fmt::format("node {} under it died", ShortHex(node_id));
      g.reason = g.lost + "; waiting to be reserved again";
      released.push_back(id);
    }
  return released;
}

std::vector<std::string> GangBook::OwnedBy(const std::string& owner) const {
  std::vector<std::string> out;
  for (const auto& [id, g] : gangs_)
    if (!g.detached && g.owner == owner) out.push_back(id);
  return out;
}

Status GangBook::CheckFits(const Gang& g, int member, const ResourceSet& resources) const {
  if (member >= static_cast<int>(g.bundles.size()))
    return MakeStatus(Code::kInvalidArgument, "gang {} has members 0..{}; there is no member {}", ShortHex(g.id),
                      g.bundles.size() - 1, member);
  if (member >= 0) {
    if (g.bundles[member].Contains(resources)) return Status();
    return MakeStatus(Code::kInvalidArgument, "it asks {} but member {} of gang {} holds {}", resources.ToString(),
                      member, ShortHex(g.id), g.bundles[member].ToString());
  }
  for (const auto& b : g.bundles)
    if (b.Contains(resources)) return Status();
  return MakeStatus(Code::kInvalidArgument, "it asks {} but no member of gang {} holds that much",
                    resources.ToString(), ShortHex(g.id));
}

void GangBook::Fill(const Gang& g, proto::GangInfo* out) const {
  out->set_gang_id(g.id);
  out->set_name(g.name);
  out->set_state(g.state == State::kReady ? "READY" : "PENDING");
  out->set_strategy(GangStrategyName(g.strategy));
  out->set_reason(g.reason);
  out->set_owner_id(g.owner);
  out->set_age_s(static_cast<double>(nodes_.clock().BootTimeNs() - g.created) / 1e9);
  for (size_t i = 0; i < g.bundles.size(); ++i) {
    proto::GangMember* m = out->add_members();
    m->set_index(static_cast<int>(i));
    for (const auto& [k, u] : g.bundles[i].units()) (*m->mutable_resources())[k] = g.bundles[i].Get(k);
    if (g.nodes[i].empty()) continue;
    m->set_node_id(g.nodes[i]);
    if (Node* n = nodes_.Find(g.nodes[i])) {
      m->set_hostname(n->info.hostname());
      m->set_address(n->info.address());
    }
  }
}

void GangBook::FillAll(google::protobuf::RepeatedPtrField<proto::GangInfo>* out) const {
  for (const std::string& id : order_) Fill(gangs_.at(id), out->Add());
}

}  // namespace corral::head
