#include "corral/agent/sleep_inhibitor.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "corral/base/log.h"

namespace corral::agent {

namespace asio = boost::asio;

namespace {

// The sd-bus functions used, resolved from libsystemd.so.0.
struct SdBus {
  decltype(&sd_bus_open_system) open_system;
  decltype(&sd_bus_call_method) call_method;
  decltype(&sd_bus_message_read) message_read;
  decltype(&sd_bus_message_unref) message_unref;
  decltype(&sd_bus_match_signal) match_signal;
  decltype(&sd_bus_get_fd) get_fd;
  decltype(&sd_bus_process) process;
  decltype(&sd_bus_flush_close_unref) flush_close_unref;
  decltype(&sd_bus_error_free) error_free;
  decltype(&sd_bus_get_property_trivial) get_property_trivial;

  static const SdBus* Load(std::string* why) {
    static SdBus bus;
    static std::string error;
    static bool loaded = [] {
      void* lib = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL);
      if (!lib) {
        error = std::string("libsystemd.so.0 cannot be loaded: ") + dlerror();
        return false;
      }
      bool ok = true;
      auto sym = [&](auto& fn, const char* name) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
        if (!fn) {
          error = std::string("libsystemd.so.0 lacks ") + name;
          ok = false;
        }
      };
      sym(bus.open_system, "sd_bus_open_system");
      sym(bus.call_method, "sd_bus_call_method");
      sym(bus.message_read, "sd_bus_message_read");
      sym(bus.message_unref, "sd_bus_message_unref");
      sym(bus.match_signal, "sd_bus_match_signal");
      sym(bus.get_fd, "sd_bus_get_fd");
      sym(bus.process, "sd_bus_process");
      sym(bus.flush_close_unref, "sd_bus_flush_close_unref");
      sym(bus.error_free, "sd_bus_error_free");
      sym(bus.get_property_trivial, "sd_bus_get_property_trivial");
      return ok;
    }();
    if (!loaded) *why = error;
    return loaded ? &bus : nullptr;
  }
};

constexpr const char* kLogind = "org.freedesktop.login1";
constexpr const char* kPath = "/org/freedesktop/login1";
constexpr const char* kManager = "org.freedesktop.login1.Manager";

}  // namespace

struct SleepInhibitor::Impl {
  Impl(asio::io_context& io) : io(io), fd(io), release_timer(io) {}
  ~Impl() {
    *alive = false;
    ReleaseLock();
    if (fd.is_open()) fd.release();  // owned by the bus
    if (bus) sd->flush_close_unref(bus);
  }

  Status TakeLock() {
    if (lock_fd >= 0) return Status::Ok();
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    int r = sd->call_method(bus, kLogind, kPath, kManager, "Inhibit", &error, &reply, "ssss", "sleep", "corral",
                            "drain this node's tasks before the machine sleeps", "delay");
    if (r < 0) {
      Status s = MakeStatus(Code::kUnavailable, "logind refused a sleep inhibitor: {}",
                            error.message ? error.message : std::strerror(-r));
      sd->error_free(&error);
      return s;
    }
    int fd_in = -1;
    r = sd->message_read(reply, "h", &fd_in);
    if (r >= 0) lock_fd = fcntl(fd_in, F_DUPFD_CLOEXEC, 3);  // the message owns fd_in
    sd->message_unref(reply);
    if (lock_fd < 0) return Status(Code::kInternal, "logind's Inhibit reply has no file descriptor");
    return Status::Ok();
  }

  void ReleaseLock() {
    release_timer.cancel();
    if (lock_fd >= 0) {
      ::close(lock_fd);
      lock_fd = -1;
    }
  }

  std::chrono::milliseconds DelayBudget() {
    uint64_t usec = 0;
    sd_bus_error error = SD_BUS_ERROR_NULL;
    int r = sd->get_property_trivial(bus, kLogind, kPath, kManager, "InhibitDelayMaxUSec", &error, 't', &usec);
    sd->error_free(&error);
    if (r < 0 || usec == 0) usec = 5'000'000;  // logind's default
    // Leave a little of logind's allowance for handing the lock back.
    return std::chrono::milliseconds(std::max<int64_t>(100, static_cast<int64_t>(usec / 1000) - 500));
  }

  static int OnPrepareForSleep(sd_bus_message* m, void* userdata, sd_bus_error*) {
    auto* self = static_cast<Impl*>(userdata);
    int start = 0;
    if (self->sd->message_read(m, "b", &start) < 0) return 0;
    // Not from inside sd_bus_process: run the handlers on the io thread next.
    asio::post(self->io, [self, alive = self->alive, start] {
      if (*alive) self->PrepareForSleep(start != 0);
    });
    return 0;
  }

  void PrepareForSleep(bool start) {
    if (start) {
      auto budget = DelayBudget();
      LOG_INFO("the machine is about to sleep: draining for up to {} ms", budget.count());
      auto release = [this, alive = alive] {
        if (*alive && lock_fd >= 0) {
          LOG_INFO("ready for sleep: releasing the sleep inhibitor");
          ReleaseLock();
        }
      };
      release_timer.expires_after(budget);
      release_timer.async_wait([release](const boost::system::error_code& ec) {
        if (!ec) release();
      });
      on_sleep(budget, release);
    } else {
      LOG_INFO("the machine woke up");
      ReleaseLock();  // a release still pending from before the sleep must not drop the new lock
      if (Status s = TakeLock(); !s.ok()) LOG_WARN("{}", s.message());
      on_wake();
    }
    ProcessQueued();
  }

  // Synchronous calls read the socket too: signals that arrived meanwhile wait in sd-bus's queue,
  // and the socket may not become readable again for them.
  void ProcessQueued() {
    asio::post(io, [this, alive = alive] {
      if (*alive)
        while (sd->process(bus, nullptr) > 0) {
        }
    });
  }

  void Wait() {
    fd.async_wait(asio::posix::stream_descriptor::wait_read, [this, alive = alive](const boost::system::error_code& ec) {
      if (!*alive || ec) return;
      while (sd->process(bus, nullptr) > 0) {
      }
      Wait();
    });
  }

  asio::io_context& io;
  const SdBus* sd = nullptr;
  sd_bus* bus = nullptr;
  asio::posix::stream_descriptor fd;
  asio::steady_timer release_timer;
  int lock_fd = -1;
  std::function<void(std::chrono::milliseconds, Done)> on_sleep;
  std::function<void()> on_wake;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);
};

SleepInhibitor::SleepInhibitor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SleepInhibitor::~SleepInhibitor() = default;

Result<std::unique_ptr<SleepInhibitor>> SleepInhibitor::Start(
    asio::io_context& io, std::function<void(std::chrono::milliseconds, Done)> on_sleep, std::function<void()> on_wake) {
  std::string why;
  const SdBus* sd = SdBus::Load(&why);
  if (!sd) return Err(Code::kUnavailable, "--drain-on-sleep needs systemd's libsystemd: " + why);
  auto impl = std::make_unique<Impl>(io);
  impl->sd = sd;
  impl->on_sleep = std::move(on_sleep);
  impl->on_wake = std::move(on_wake);
  int r = sd->open_system(&impl->bus);
  if (r < 0)
    return Err(Code::kUnavailable,
               fmt::format("--drain-on-sleep cannot reach the system D-Bus ({}); it needs a machine run by "
                           "systemd, with systemd-logind", std::strerror(-r)));
  r = sd->match_signal(impl->bus, nullptr, kLogind, kPath, kManager, "PrepareForSleep", &Impl::OnPrepareForSleep,
                       impl.get());
  if (r < 0)
    return Err(Code::kUnavailable, fmt::format("cannot subscribe to logind's PrepareForSleep: {}", std::strerror(-r)));
  if (Status s = impl->TakeLock(); !s.ok())
    return Err(Code::kUnavailable, s.message() + " (is systemd-logind running on this machine?)");
  impl->fd.assign(sd->get_fd(impl->bus));
  impl->Wait();
  impl->ProcessQueued();  // messages that arrived during the calls above
  LOG_INFO("holding a sleep inhibitor: this node drains before the machine sleeps");
  return std::unique_ptr<SleepInhibitor>(new SleepInhibitor(std::move(impl)));
}

}  // namespace corral::agent
