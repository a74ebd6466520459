// Fuzzes ParseNpy (server/common/npy.h): request inputs and every data file
// the tools read go through it.
//
// Invariants checked on every array that parses: the payload is exactly
// shape product x element size (computed here without trusting size()),
// the element conversions read only that payload, and SerializeNpy writes
// bytes that ParseNpy reads back to the same dtype, shape and payload.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "server/common/npy.h"

namespace {

void Fail(const char* what) {
  std::fprintf(stderr, "npy_fuzz: invariant broken: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  rnnserve::StatusOr<rnnserve::NpyArray> parsed =
      rnnserve::ParseNpy(bytes, "fuzz.npy");
  if (!parsed.ok()) {
    if (parsed.status().message().empty()) Fail("error without a message");
    return 0;
  }
  const rnnserve::NpyArray& array = *parsed;

  // Element count from the shape, capped above any real payload instead of
  // overflowing: a zero dimension after huge ones is a legal, empty array.
  constexpr unsigned __int128 kCap = static_cast<unsigned __int128>(1) << 64;
  unsigned __int128 elements = 1;
  bool empty = false;
  for (int64_t d : array.shape) {
    if (d < 0) Fail("negative dimension");
    if (d == 0) empty = true;
    elements = std::min(kCap, elements * static_cast<uint64_t>(d));
  }
  if (empty) elements = 0;
  if (elements * rnnserve::NpyArray::ElementSize(array.dtype) !=
      array.data.size()) {
    Fail("payload size != shape product x element size");
  }
  if (static_cast<unsigned __int128>(array.size()) != elements) {
    Fail("size() != shape product");
  }
  if (array.ToFloat().size() != elements ||
      array.ToInt64().size() != elements) {
    Fail("conversions return the wrong element count");
  }

  rnnserve::StatusOr<rnnserve::NpyArray> back =
      rnnserve::ParseNpy(rnnserve::SerializeNpy(array), "round trip");
  if (!back.ok()) Fail("SerializeNpy output does not parse");
  if (back->dtype != array.dtype || back->shape != array.shape ||
      back->data != array.data) {
    Fail("round trip changed the array");
  }
  return 0;
}
