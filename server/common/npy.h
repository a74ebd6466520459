// Reading and writing NumPy .npy files (format versions 1.0, 2.0, 3.0).
//
// rnnserve's data files are .npy: float32 features [N,T,F], int64/int32 token
// ids [N,T], and the tools' outputs. Only little-endian, C-ordered arrays of
// float32, int64 and int32 are accepted; anything else (big-endian, Fortran
// order, object arrays, a header that lies about the payload size) is an
// INVALID_ARGUMENT error naming the file and what is wrong.
#ifndef RNNSERVE_COMMON_NPY_H_
#define RNNSERVE_COMMON_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "server/common/status.h"

namespace rnnserve {

enum class NpyDtype { kFloat32, kInt64, kInt32 };
const char* NpyDtypeName(NpyDtype dtype);  // "float32", "int64", "int32"

struct NpyArray {
  NpyDtype dtype = NpyDtype::kFloat32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // C order, little-endian, size() * element size

  int64_t size() const;  // number of elements
  static size_t ElementSize(NpyDtype dtype);

  const float* f32() const { return reinterpret_cast<const float*>(data.data()); }
  float* f32() { return reinterpret_cast<float*>(data.data()); }
  const int64_t* i64() const {
    return reinterpret_cast<const int64_t*>(data.data());
  }
  const int32_t* i32() const {
    return reinterpret_cast<const int32_t*>(data.data());
  }

  static NpyArray FromFloat(std::vector<int64_t> shape, const std::vector<float>& values);
  static NpyArray FromInt64(std::vector<int64_t> shape, const std::vector<int64_t>& values);
  // Values converted to float / int64 whatever the stored dtype. Float to
  // int64 truncates toward zero; NaN gives 0 and values beyond the int64
  // range saturate.
  std::vector<float> ToFloat() const;
  std::vector<int64_t> ToInt64() const;
  std::string ShapeString() const;  // "[3, 7, 4]"
};

// `what` names the source in error messages (a path, or "request input x").
StatusOr<NpyArray> ParseNpy(const std::string& bytes, const std::string& what);
StatusOr<NpyArray> ReadNpy(const std::string& path);
std::string SerializeNpy(const NpyArray& array);
Status WriteNpy(const std::string& path, const NpyArray& array);

}  // namespace rnnserve

#endif  // RNNSERVE_COMMON_NPY_H_
