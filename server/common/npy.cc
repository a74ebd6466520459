#include "server/common/npy.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

namespace rnnserve {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
// A header larger than this is not something numpy writes for our arrays.
constexpr size_t kMaxHeaderLen = 1 << 16;
constexpr int kMaxRank = 8;

// Finds `'key':` in the header dict and returns the position after the colon.
size_t FindKey(const std::string& header, const std::string& key) {
  for (const char* quote : {"'", "\""}) {
    const std::string k = quote + key + quote;
    size_t pos = header.find(k);
    if (pos == std::string::npos) continue;
    pos = header.find(':', pos + k.size());
    if (pos != std::string::npos) return pos + 1;
  }
  return std::string::npos;
}

size_t SkipSpaces(const std::string& s, size_t pos) {
  while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t')) ++pos;
  return pos;
}

Status ParseHeader(const std::string& header, const std::string& what,
                   NpyArray* array) {
  auto bad = [&](const std::string& why) {
    return InvalidArgument(what + ": bad .npy header: " + why);
  };
  // descr
  size_t pos = FindKey(header, "descr");
  if (pos == std::string::npos) return bad("no 'descr'");
  pos = SkipSpaces(header, pos);
  if (pos >= header.size() || (header[pos] != '\'' && header[pos] != '"')) {
    return bad("'descr' is not a string");
  }
  const char q = header[pos];
  const size_t end = header.find(q, pos + 1);
  if (end == std::string::npos) return bad("unterminated 'descr'");
  const std::string descr = header.substr(pos + 1, end - pos - 1);
  if (descr == "<f4" || descr == "|f4") {
    array->dtype = NpyDtype::kFloat32;
  } else if (descr == "<i8") {
    array->dtype = NpyDtype::kInt64;
  } else if (descr == "<i4") {
    array->dtype = NpyDtype::kInt32;
  } else {
    return InvalidArgument(what + ": unsupported .npy dtype '" + descr +
                           "' (accepted: little-endian float32, int64, int32)");
  }
  // fortran_order
  pos = FindKey(header, "fortran_order");
  if (pos == std::string::npos) return bad("no 'fortran_order'");
  pos = SkipSpaces(header, pos);
  if (header.compare(pos, 4, "True") == 0) {
    return InvalidArgument(what + ": Fortran-ordered .npy is not supported");
  }
  if (header.compare(pos, 5, "False") != 0) return bad("bad 'fortran_order'");
  // shape
  pos = FindKey(header, "shape");
  if (pos == std::string::npos) return bad("no 'shape'");
  pos = SkipSpaces(header, pos);
  if (pos >= header.size() || header[pos] != '(') return bad("bad 'shape'");
  const size_t close = header.find(')', pos);
  if (close == std::string::npos) return bad("unterminated 'shape'");
  array->shape.clear();
  std::string dims = header.substr(pos + 1, close - pos - 1);
  size_t i = 0;
  while (i < dims.size()) {
    i = SkipSpaces(dims, i);
    if (i >= dims.size()) break;
    if (dims[i] < '0' || dims[i] > '9') return bad("bad dimension in 'shape'");
    int64_t v = 0;
    while (i < dims.size() && dims[i] >= '0' && dims[i] <= '9') {
      v = v * 10 + (dims[i] - '0');
      if (v > (int64_t{1} << 40)) return bad("dimension too large");
      ++i;
    }
    array->shape.push_back(v);
    if (array->shape.size() > kMaxRank) return bad("rank above 8");
    i = SkipSpaces(dims, i);
    if (i < dims.size()) {
      if (dims[i] != ',') return bad("bad separator in 'shape'");
      ++i;
    }
  }
  return Status::Ok();
}

// static_cast<int64_t> of a NaN or of a float outside the int64 range is
// undefined behaviour; those get 0 and the nearest bound instead.
int64_t FloatToInt64(float v) {
  constexpr float kTwoPow63 = 9223372036854775808.0f;
  if (std::isnan(v)) return 0;
  if (v >= kTwoPow63) return std::numeric_limits<int64_t>::max();
  if (v < -kTwoPow63) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

}  // namespace

const char* NpyDtypeName(NpyDtype dtype) {
  switch (dtype) {
    case NpyDtype::kFloat32: return "float32";
    case NpyDtype::kInt64: return "int64";
    case NpyDtype::kInt32: return "int32";
  }
  return "?";
}

size_t NpyArray::ElementSize(NpyDtype dtype) {
  return dtype == NpyDtype::kInt64 ? 8 : 4;
}

int64_t NpyArray::size() const {
  // A parsed header may put a 0 after dimensions of up to 2^40: that array
  // is empty, and multiplying first would overflow.
  for (int64_t d : shape) {
    if (d == 0) return 0;
  }
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

NpyArray NpyArray::FromFloat(std::vector<int64_t> shape,
                             const std::vector<float>& values) {
  NpyArray a;
  a.dtype = NpyDtype::kFloat32;
  a.shape = std::move(shape);
  a.data.resize(values.size() * sizeof(float));
  // memcpy from an empty vector's null data() is undefined even for 0 bytes.
  if (!values.empty()) std::memcpy(a.data.data(), values.data(), a.data.size());
  return a;
}

NpyArray NpyArray::FromInt64(std::vector<int64_t> shape,
                             const std::vector<int64_t>& values) {
  NpyArray a;
  a.dtype = NpyDtype::kInt64;
  a.shape = std::move(shape);
  a.data.resize(values.size() * sizeof(int64_t));
  // memcpy from an empty vector's null data() is undefined even for 0 bytes.
  if (!values.empty()) std::memcpy(a.data.data(), values.data(), a.data.size());
  return a;
}

std::vector<float> NpyArray::ToFloat() const {
  std::vector<float> out(size());
  for (int64_t i = 0; i < size(); ++i) {
    switch (dtype) {
      case NpyDtype::kFloat32: out[i] = f32()[i]; break;
      case NpyDtype::kInt64: out[i] = static_cast<float>(i64()[i]); break;
      case NpyDtype::kInt32: out[i] = static_cast<float>(i32()[i]); break;
    }
  }
  return out;
}

std::vector<int64_t> NpyArray::ToInt64() const {
  std::vector<int64_t> out(size());
  for (int64_t i = 0; i < size(); ++i) {
    switch (dtype) {
      case NpyDtype::kFloat32: out[i] = FloatToInt64(f32()[i]); break;
      case NpyDtype::kInt64: out[i] = i64()[i]; break;
      case NpyDtype::kInt32: out[i] = i32()[i]; break;
    }
  }
  return out;
}

std::string NpyArray::ShapeString() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

StatusOr<NpyArray> ParseNpy(const std::string& bytes, const std::string& what) {
  if (bytes.size() < kMagicLen + 4 ||
      std::memcmp(bytes.data(), kMagic, kMagicLen) != 0) {
    return InvalidArgument(what + ": not a .npy file (bad magic)");
  }
  const uint8_t major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0;
  size_t header_start = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) |
                 (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return InvalidArgument(what + ": truncated .npy");
    for (int i = 0; i < 4; ++i) {
      header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[8 + i]))
                    << (8 * i);
    }
    header_start = 12;
  } else {
    return InvalidArgument(what + ": unsupported .npy version " +
                           std::to_string(major));
  }
  if (header_len > kMaxHeaderLen || header_start + header_len > bytes.size()) {
    return InvalidArgument(what + ": truncated .npy header");
  }
  NpyArray array;
  RETURN_IF_ERROR(
      ParseHeader(bytes.substr(header_start, header_len), what, &array));
  const size_t payload = bytes.size() - header_start - header_len;
  // Guard the multiplication: each dim is capped at 2^40, rank at 8.
  long double expected = NpyArray::ElementSize(array.dtype);
  for (int64_t d : array.shape) expected *= static_cast<long double>(d);
  if (expected != static_cast<long double>(payload)) {
    std::ostringstream msg;
    msg << what << ": .npy payload is " << payload << " bytes but shape "
        << array.ShapeString() << " of " << NpyDtypeName(array.dtype)
        << " needs " << static_cast<double>(expected);
    return InvalidArgument(msg.str());
  }
  array.data.assign(bytes.begin() + header_start + header_len, bytes.end());
  return array;
}

StatusOr<NpyArray> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ParseNpy(ss.str(), path);
}

std::string SerializeNpy(const NpyArray& array) {
  std::string descr = array.dtype == NpyDtype::kFloat32 ? "<f4"
                      : array.dtype == NpyDtype::kInt64 ? "<i8"
                                                         : "<i4";
  std::string shape = "(";
  for (size_t i = 0; i < array.shape.size(); ++i) {
    shape += std::to_string(array.shape[i]);
    if (array.shape.size() == 1 || i + 1 < array.shape.size()) shape += ",";
    if (i + 1 < array.shape.size()) shape += " ";
  }
  shape += ")";
  std::string header = "{'descr': '" + descr +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad so that magic + version + len + header is a multiple of 64, ending \n.
  const size_t unpadded = kMagicLen + 2 + 2 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out(kMagic, kMagicLen);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(reinterpret_cast<const char*>(array.data.data()), array.data.size());
  return out;
}

Status WriteNpy(const std::string& path, const NpyArray& array) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return NotFound(path + ": cannot open for writing");
  const std::string bytes = SerializeNpy(array);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) return Internal(path + ": write failed");
  return Status::Ok();
}

}  // namespace rnnserve
