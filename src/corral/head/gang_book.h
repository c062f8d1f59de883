// GangBook: the head's gangs, all-or-nothing reservations of bundles of resources (Ray's placement
// groups); gang_placement.h decides where the bundles go.
//
// A reserved bundle's resources leave its node's free pool and reappear on that node under names
// that only the gang's tasks ask for (GangRequestFor), so the ordinary scheduler places them:
//   gang:<id>:<i>:<R>  bundle i's amount of R        gang:<id>:<R>  R of all its bundles on that node
//   gang:<id>:<i>      1000 (a marker)               gang:<id>      1000 per bundle on that node
// Every gang task asks a thousandth of a marker too, so one that asks for nothing (num_cpus=0)
// still lands on its bundle's node.
// A gang is reserved whole or not at all; while it waits it holds nothing, so two gangs never each
// hold half of what both need. When a node under a reserved gang dies, the whole gang is released and
// waits again. Owned by the TaskManager; io thread only.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "corral/base/clock.h"
#include "corral/base/resources.h"
#include "corral/base/status.h"
#include "corral/client.pb.h"
#include "corral/head/gang_placement.h"
#include "corral/head/node_registry.h"

namespace corral::head {

// The scheduling request of a task placed in `member`'s bundle (-1: any bundle) of gang `gang_id`.
ResourceSet GangRequestFor(const std::string& gang_id, int member, const ResourceSet& resources);
// True for the names above: `corral status` shows gangs on their own, not among a node's resources.
bool IsGangResource(const std::string& name);

class GangBook {
 public:
  enum class State { kPending, kReady };
  struct Gang {
    std::string id, name, owner;
    std::string owner_token;         // the token its creator used: who else may use and remove it
    bool detached = false;
    GangStrategy strategy = GangStrategy::kPack;
    std::vector<ResourceSet> bundles;
    std::vector<std::string> nodes;  // node id of each bundle while reserved
    State state = State::kPending;
    std::string reason;              // pending: why it waits
    std::string lost;                // pending again after a node under it died: which, said before the reason
    Nanos created = 0;
  };

  explicit GangBook(NodeRegistry& nodes) : nodes_(nodes) {}

  Result<const Gang*> Create(const proto::GangRequest& request, const std::string& owner,
                             const std::string& owner_token = "");
  const Gang* Find(const std::string& id) const;
  // Releases its reservation and forgets it. What runs in it is the caller's to stop.
  void Remove(const std::string& id);
  // Reserves the waiting gangs that fit now, oldest first. True if any was.
  bool ReservePending();
  // Gangs with a bundle on `node_id` are released and wait again; returns their ids.
  std::vector<std::string> NodeGone(const std::string& node_id);
  // Gangs `owner` created that are not detached.
  std::vector<std::string> OwnedBy(const std::string& owner) const;
  bool HasPending() const;

  // Whether a task asking `resources` in `member` (-1: any) can ever run in the gang; else why not.
  Status CheckFits(const Gang& gang, int member, const ResourceSet& resources) const;
  void Fill(const Gang& gang, proto::GangInfo* out) const;
  void FillAll(google::protobuf::RepeatedPtrField<proto::GangInfo>* out) const;

 private:
  void Reserve(Gang& gang, const std::vector<const NodeView*>& where);
  void Release(Gang& gang, const std::string& why);

  NodeRegistry& nodes_;
  std::map<std::string, Gang> gangs_;
  std::vector<std::string> order_;  // creation order, for ReservePending
};

}  // namespace corral::head
