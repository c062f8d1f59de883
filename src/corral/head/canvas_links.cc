#include "corral/head/canvas_links.h"

#include "corral/base/log.h"

namespace corral::head {

CanvasLinks::CanvasLinks(boost::asio::io_context& io, store::GroupCommitter& committer, Hooks hooks)
    : committer_(committer), hooks_(std::move(hooks)), guard_(io) {}

void CanvasLinks::Link(const store::DurableTask& child) {
  Child& c = waiting_[child.id];
  c.chord = child.link == "chord" || child.parents.size() > 1;  // (an immutable callback's link is "after")
  std::vector<std::string> stored;  // ended already (or unknown): their end is in the store
  for (const auto& p : child.parents) {
    c.parents_left++;
    if (hooks_.held(p)) children_.emplace(p, child.id);
    else stored.push_back(p);
  }
  if (stored.empty()) return;
  committer_.Run([this, id = child.id, stored](store::Store& st) {
    std::vector<store::DurableTask> parents;
    for (const auto& p : stored) {
      auto t = st.Get(p);
      store::DurableTask parent;
      parent.id = p;
      if (t && t->has_value()) parent = std::move(**t);
      else parent.state = store::TaskState::kFailure, parent.error = t ? "no such task (purged?)" : t.error().message();
      parents.push_back(std::move(parent));
    }
    guard_.Post([this, id, parents = std::move(parents)] {
      for (const auto& p : parents) {
        if (!store::IsFinal(p.state)) {  // unfinished after all (submitted meanwhile): wait for its end
          if (hooks_.held(p.id)) children_.emplace(p.id, id);
          continue;
        }
        Learn(id, p);
      }
    });
  });
}

void CanvasLinks::ParentEnded(const store::DurableTask& parent) {
  auto [first, last] = children_.equal_range(parent.id);
  std::vector<std::string> children;
  for (auto c = first; c != last; ++c) children.push_back(c->second);
  children_.erase(first, last);
  for (const auto& child : children) Learn(child, parent);
}

void CanvasLinks::Learn(const std::string& child, const store::DurableTask& parent) {
  auto it = waiting_.find(child);
  if (it == waiting_.end() || it->second.parents_left == 0 || !hooks_.held(child)) return;
  if (parent.state != store::TaskState::kSuccess) {
    // The exception's own line ("ValueError: ...") is the last line of a traceback.
    std::string why = parent.error;
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    why = why.substr(why.rfind('\n') + 1);
    // A chord's callback says so: Celery raises ChordError for it, naming the member.
    hooks_.end(child,
               parent.state == store::TaskState::kRevoked ? store::TaskState::kRevoked : store::TaskState::kFailure,
               fmt::format("its {} task {} ended {}{}{}", it->second.chord ? "chord header" : "parent", parent.id,
                           store::TaskStateName(parent.state), why.empty() ? "" : ": ", why),
               parent.state == store::TaskState::kFailure ? parent.result : std::string());
    return;
  }
  it->second.results[parent.id] = {parent.args_format, parent.result};
  if (--it->second.parents_left > 0) return;
  hooks_.due(child);
}

bool CanvasLinks::Waiting(const std::string& child) const {
  auto it = waiting_.find(child);
  return it != waiting_.end() && it->second.parents_left > 0;
}

void CanvasLinks::FillParents(const store::DurableTask& child, proto::TaskSpec* spec) const {
  if (child.parents.empty()) return;
  spec->set_link(child.link);
  auto it = waiting_.find(child.id);
  for (const auto& p : child.parents) {
    const std::pair<std::string, std::string>* r = nullptr;
    if (it != waiting_.end())
      if (auto found = it->second.results.find(p); found != it->second.results.end()) r = &found->second;
    spec->add_parent_formats(r ? r->first : "");
    spec->add_parent_results(r ? r->second : "");
  }
}

}  // namespace corral::head
