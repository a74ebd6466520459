#include "client/sequence_chunks.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace rnnserve::client {
namespace {

// The number of values in dims [from, end) of `shape`; -1 when a dim is
// negative or the product overflows (a response's shape comes off the wire).
// A 0 dim makes 0 even after dims whose product alone would overflow.
int64_t Product(const std::vector<int64_t>& shape, size_t from) {
  int64_t p = 1;
  bool overflow = false;
  for (size_t i = from; i < shape.size(); ++i) {
    if (shape[i] < 0) return -1;
    if (shape[i] == 0) return 0;
    overflow = overflow || __builtin_mul_overflow(p, shape[i], &p);
  }
  return overflow ? -1 : p;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  NpyArray a;
  a.shape = shape;
  return a.ShapeString();
}

}  // namespace

StatusOr<std::vector<StepRange>> SplitSteps(int64_t steps, int64_t chunk) {
  if (steps < 1)
    return InvalidArgument("sequence has " + std::to_string(steps) + " steps");
  if (chunk < 1)
    return InvalidArgument("chunk must be >= 1 steps, got " +
                           std::to_string(chunk));
  std::vector<StepRange> ranges;
  for (int64_t begin = 0; begin < steps; begin += chunk) {
    ranges.push_back({begin, std::min(steps, begin + chunk)});
  }
  return ranges;
}

StatusOr<NpyArray> AsSingleSequence(const NpyArray& array) {
  NpyArray out = array;
  const bool tokens = array.dtype != NpyDtype::kFloat32;
  const size_t rank_without_batch = tokens ? 1 : 2;
  if (array.shape.size() == rank_without_batch) {
    out.shape.insert(out.shape.begin(), 1);
  } else if (array.shape.size() != rank_without_batch + 1) {
    return InvalidArgument(std::string("a single sequence of ") +
                           NpyDtypeName(array.dtype) + " must have shape " +
                           (tokens ? "[1, T] or [T]" : "[1, T, F] or [T, F]") +
                           ", got " + array.ShapeString());
  }
  if (out.shape[0] != 1) {
    return InvalidArgument("expected one sequence (N = 1), got shape " +
                           array.ShapeString());
  }
  if (out.shape[1] < 1)
    return InvalidArgument("sequence has no steps: " + array.ShapeString());
  return out;
}

NpyArray SliceSteps(const NpyArray& array, StepRange range) {
  const size_t elem = NpyArray::ElementSize(array.dtype);
  const int64_t rows = array.shape[0];
  const int64_t steps = array.shape[1];
  const int64_t inner = Product(array.shape, 2);
  NpyArray out;
  out.dtype = array.dtype;
  out.shape = array.shape;
  out.shape[1] = range.size();
  out.data.resize(static_cast<size_t>(rows * range.size() * inner) * elem);
  const size_t row_bytes = static_cast<size_t>(range.size() * inner) * elem;
  for (int64_t n = 0; n < rows; ++n) {
    const size_t src =
        static_cast<size_t>((n * steps + range.begin) * inner) * elem;
    std::memcpy(out.data.data() + n * row_bytes, array.data.data() + src,
                row_bytes);
  }
  return out;
}

NpyArray SliceRows(const NpyArray& array, int64_t first, int64_t count) {
  const size_t row_bytes = static_cast<size_t>(Product(array.shape, 1)) *
                           NpyArray::ElementSize(array.dtype);
  const int64_t rows = array.shape[0];
  NpyArray out;
  out.dtype = array.dtype;
  out.shape = array.shape;
  out.shape[0] = count;
  out.data.resize(static_cast<size_t>(count) * row_bytes);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t src = (first + i) % rows;
    std::memcpy(out.data.data() + i * row_bytes,
                array.data.data() + src * row_bytes, row_bytes);
  }
  return out;
}

Status AppendSteps(const std::vector<int64_t>& chunk_shape,
                   const std::vector<float>& chunk,
                   std::vector<int64_t>* whole_shape,
                   std::vector<float>* whole) {
  if (chunk_shape.size() < 2) {
    return InvalidArgument("chunk output has rank " +
                           std::to_string(chunk_shape.size()) +
                           ", need [N, T, ...] to concatenate along T");
  }
  const int64_t needed = Product(chunk_shape, 0);
  if (needed < 0) {
    return InvalidArgument("chunk output shape " + ShapeString(chunk_shape) +
                           " is not a shape (negative or overflowing)");
  }
  if (static_cast<int64_t>(chunk.size()) != needed) {
    return InvalidArgument("chunk output holds " +
                           std::to_string(chunk.size()) +
                           " values, its shape needs " + std::to_string(needed));
  }
  if (whole_shape->empty()) {
    *whole_shape = chunk_shape;
    *whole = chunk;
    return Status::Ok();
  }
  bool same = whole_shape->size() == chunk_shape.size();
  for (size_t i = 0; same && i < chunk_shape.size(); ++i) {
    same = i == 1 || (*whole_shape)[i] == chunk_shape[i];
  }
  if (!same) {
    return InvalidArgument("chunk output shape " + ShapeString(chunk_shape) +
                           " does not continue " + ShapeString(*whole_shape) +
                           " along T");
  }
  const int64_t rows = chunk_shape[0];
  const int64_t inner = Product(chunk_shape, 2);
  const int64_t old_steps = (*whole_shape)[1];
  const int64_t add_steps = chunk_shape[1];
  const int64_t new_steps = old_steps + add_steps;
  std::vector<float> merged(static_cast<size_t>(rows * new_steps * inner));
  for (int64_t n = 0; n < rows; ++n) {
    std::copy_n(whole->begin() + n * old_steps * inner, old_steps * inner,
                merged.begin() + n * new_steps * inner);
    std::copy_n(chunk.begin() + n * add_steps * inner, add_steps * inner,
                merged.begin() + (n * new_steps + old_steps) * inner);
  }
  (*whole_shape)[1] = new_steps;
  *whole = std::move(merged);
  return Status::Ok();
}

}  // namespace rnnserve::client
