// Client messages as the Python dicts corral._core returns (nodes, actors, gangs, durable tasks),
// and the actor options dict as the ActorSpec the client registers. Conversions only: no I/O; call
// with the GIL held.
#pragma once

#include <string>

#include <nanobind/nanobind.h>

#include "corral/client.pb.h"

namespace corral::python {

namespace nb = nanobind;

inline nb::bytes Bytes(const std::string& s) { return nb::bytes(s.data(), s.size()); }
inline std::string Str(const nb::bytes& b) { return std::string(b.c_str(), b.size()); }

nb::dict GangDict(const proto::GangInfo& g);
nb::dict NodeDict(const proto::NodeStatus& n);
nb::dict DurableDict(const proto::DurableTaskInfo& t);
nb::dict ActorDict(const proto::ActorInfo& a);
proto::ActorSpec ActorSpecOf(const nb::dict& d);

}  // namespace corral::python
