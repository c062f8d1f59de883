// A driver for fuzz targets when libFuzzer is not available (GCC builds, CI): runs every file of
// the corpus directories given, then random mutations of them for a fixed number of iterations
// (CORRAL_FUZZ_ITERATIONS, default 20000) with a fixed seed, so a CI run is short and repeatable.
// For coverage-guided fuzzing build with clang and -DCORRAL_FUZZ=ON (see fuzz/README.md).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  std::vector<std::string> corpus;
  for (int i = 1; i < argc; ++i) {
    for (const auto& entry : std::filesystem::directory_iterator(argv[i])) {
      std::ifstream in(entry.path(), std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      corpus.push_back(ss.str());
    }
  }
  if (corpus.empty()) corpus.push_back("");
  for (const auto& c : corpus) LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(c.data()), c.size());
  const char* env = std::getenv("CORRAL_FUZZ_ITERATIONS");
  long iterations = env ? std::atol(env) : 20000;
  std::mt19937_64 rng(12345);
  for (long i = 0; i < iterations; ++i) {
    std::string s = corpus[rng() % corpus.size()];
    int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 4) {
        case 0: if (!s.empty()) s[rng() % s.size()] = static_cast<char>(rng()); break;
        case 1: s.insert(s.begin() + static_cast<long>(s.empty() ? 0 : rng() % s.size()), static_cast<char>(rng())); break;
        case 2: if (!s.empty()) s.erase(rng() % s.size(), 1 + rng() % 8); break;
        case 3: s += corpus[rng() % corpus.size()]; break;
      }
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  }
  std::printf("fuzz: %zu corpus inputs and %ld mutations ran without a crash\n", corpus.size(), iterations);
  return 0;
}
