#include "server/common/npy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>

namespace rnnserve {
namespace {

TEST(NpyTest, RoundTripFloatAndInt) {
  const NpyArray f = NpyArray::FromFloat({2, 3}, {1, 2, 3, 4, 5, -6.5f});
  auto back = ParseNpy(SerializeNpy(f), "f");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(back->ToFloat(), f.ToFloat());
  const NpyArray i = NpyArray::FromInt64({4}, {1, -2, 3, 1LL << 40});
  auto ib = ParseNpy(SerializeNpy(i), "i");
  ASSERT_TRUE(ib.ok());
  EXPECT_EQ(ib->dtype, NpyDtype::kInt64);
  EXPECT_EQ(ib->ToInt64(), i.ToInt64());
  // Header padded to a multiple of 64 as numpy does.
  const std::string bytes = SerializeNpy(f);
  EXPECT_EQ((bytes.size() - 24) % 64, 0u);
}

TEST(NpyTest, ReadsFilesWrittenByNumpy) {
  // Written by numpy (tools/make_goldens.py): every golden input parses and
  // its payload matches its shape.
  auto a = ReadNpy(std::string(RNNSERVE_TESTDATA) + "/goldens/lstm_1l/input.npy");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->dtype, NpyDtype::kFloat32);
  EXPECT_EQ(a->shape.size(), 3u);
  EXPECT_EQ(a->size() * 4, static_cast<int64_t>(a->data.size()));
  auto t = ReadNpy(std::string(RNNSERVE_TESTDATA) +
                   "/goldens/lstm_tokens_head_every/input.npy");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->dtype, NpyDtype::kInt64);
}

TEST(NpyTest, BadFilesAreClearErrors) {
  const std::string good = SerializeNpy(NpyArray::FromFloat({2, 2}, {1, 2, 3, 4}));
  auto expect_bad = [](const std::string& bytes, const std::string& needle) {
    auto r = ParseNpy(bytes, "x.npy");
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(needle), std::string::npos)
        << r.status().message();
  };
  expect_bad("", "not a .npy");
  expect_bad("hello world, not numpy", "not a .npy");
  expect_bad(good.substr(0, 20), "truncated");
  expect_bad(good.substr(0, good.size() - 3), "payload");
  std::string be = good;
  be.replace(be.find("<f4"), 3, ">f4");
  expect_bad(be, "dtype");
  std::string f16 = good;
  f16.replace(f16.find("<f4"), 3, "<f2");
  expect_bad(f16, "dtype");
  std::string fortran = good;
  fortran.replace(fortran.find("False"), 5, "True ");
  expect_bad(fortran, "Fortran");
  std::string shape = good;
  shape.replace(shape.find("(2, 2)"), 6, "(2, x)");
  expect_bad(shape, "shape");
  std::string huge = good;
  huge.replace(huge.find("(2, 2)"), 6, "(9999999999999, 2)");
  expect_bad(huge, "");
  EXPECT_EQ(ReadNpy("/nonexistent.npy").status().code(), StatusCode::kNotFound);
}

// Found by tests/fuzz/npy_fuzz: a header may put a 0 after dimensions at the
// parser's 2^40 cap; the array is legal and empty, and size() must not
// multiply the big dimensions first (signed overflow).
TEST(NpyTest, ZeroDimensionAfterHugeOnesIsEmpty) {
  const std::string header =
      "{'descr': '<f4', 'fortran_order': False, "
      "'shape': (1099511627776, 1099511627776, 0), }\n";
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(header.size() & 0xff);
  bytes += static_cast<char>(header.size() >> 8);
  bytes += header;
  auto a = ParseNpy(bytes, "empty.npy");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->size(), 0);
  EXPECT_TRUE(a->data.empty());
  EXPECT_TRUE(a->ToFloat().empty());
  EXPECT_TRUE(a->ToInt64().empty());
}

// Found by tests/fuzz/npy_fuzz: converting a float32 array holding NaN or a
// value beyond int64 was a plain cast (undefined behaviour); it saturates.
TEST(NpyTest, FloatToInt64SaturatesAndMapsNanToZero) {
  const float inf = std::numeric_limits<float>::infinity();
  const NpyArray a = NpyArray::FromFloat(
      {7}, {std::nanf(""), inf, -inf, 1.0e22f, -1.0e22f, -2.9f, 3.9f});
  const int64_t max = std::numeric_limits<int64_t>::max();
  const int64_t min = std::numeric_limits<int64_t>::min();
  EXPECT_EQ(a.ToInt64(), (std::vector<int64_t>{0, max, min, max, min, -2, 3}));
}

}  // namespace
}  // namespace rnnserve
