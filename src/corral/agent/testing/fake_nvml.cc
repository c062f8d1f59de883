/* A stand-in for NVIDIA's libnvidia-ml.so.1 with the calls Corral's agent makes, for tests on
 * machines without a GPU. What it reports comes from the environment, read at each call:
 *   CORRAL_FAKE_NVML_DEVICES  "name|memory bytes|uuid;name|memory bytes|uuid;..." (unset or empty:
 *                             no device)
 *   CORRAL_FAKE_NVML_FAIL     "init": nvmlInit_v2 fails as with no driver loaded;
 *                             "count": nvmlDeviceGetCount_v2 fails */
#include <cstdio>
#include <cstdlib>
#include <cstring>

extern "C" {

enum { kSuccess = 0, kInvalidArgument = 2, kDriverNotLoaded = 9, kUnknown = 999, kMaxDevices = 64 };

struct Device {
  char name[96];
  unsigned long long memory;
  char uuid[96];
};

struct Memory {
  unsigned long long total, free, used;
};

static struct Device devices[kMaxDevices];

// Copies what fits of `from` into `to` (`size` bytes), always terminated.
static void Copy(char* to, size_t size, const char* from) {
  size_t n = strlen(from);
  if (n >= size) n = size - 1;
  memcpy(to, from, n);
  to[n] = 0;
}

static unsigned Load(void) {
  const char* spec = getenv("CORRAL_FAKE_NVML_DEVICES");
  unsigned n = 0;
  if (!spec) return 0;
  while (*spec && n < kMaxDevices) {
    const char* end = strchr(spec, ';');
    size_t len = end ? static_cast<size_t>(end - spec) : strlen(spec);
    char entry[256];
    if (len >= sizeof entry) len = sizeof entry - 1;
    memcpy(entry, spec, len);
    entry[len] = 0;
    char* memory = strchr(entry, '|');
    char* uuid = memory ? strchr(memory + 1, '|') : NULL;
    if (memory) *memory++ = 0;
    if (uuid) *uuid++ = 0;
    Copy(devices[n].name, sizeof devices[n].name, entry);
    devices[n].memory = memory ? strtoull(memory, NULL, 10) : 0;
    Copy(devices[n].uuid, sizeof devices[n].uuid, uuid ? uuid : "");
    if (len > 0) n++;
    if (!end) break;
    spec = end + 1;
  }
  return n;
}

static int Failing(const char* what) {
  const char* fail = getenv("CORRAL_FAKE_NVML_FAIL");
  return fail && strcmp(fail, what) == 0;
}

int nvmlInit_v2(void) { return Failing("init") ? kDriverNotLoaded : kSuccess; }
int nvmlShutdown(void) { return kSuccess; }

const char* nvmlErrorString(int rc) {
  return rc == kDriverNotLoaded ? "Driver Not Loaded" : rc == kSuccess ? "Success" : "Unknown Error";
}

int nvmlDeviceGetCount_v2(unsigned* count) {
  if (Failing("count")) return kUnknown;
  *count = Load();
  return kSuccess;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned index, void** handle) {
  if (index >= Load()) return kInvalidArgument;
  *handle = &devices[index];
  return kSuccess;
}

int nvmlDeviceGetName(void* handle, char* name, unsigned length) {
  Copy(name, length, static_cast<Device*>(handle)->name);
  return kSuccess;
}

int nvmlDeviceGetUUID(void* handle, char* uuid, unsigned length) {
  Copy(uuid, length, static_cast<Device*>(handle)->uuid);
  return kSuccess;
}

int nvmlDeviceGetMemoryInfo(void* handle, struct Memory* memory) {
  memory->total = memory->free = static_cast<Device*>(handle)->memory;
  memory->used = 0;
  return kSuccess;
}

}  // extern "C"
