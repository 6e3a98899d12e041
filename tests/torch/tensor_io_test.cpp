// at::Tensor <-> safetensors: every dtype torch and safetensors share survives a round trip,
// non-contiguous inputs are written in logical order, loaded tensors own their memory.
#include <gtest/gtest.h>

#include "esft/error.h"
#include "esft/tensor_io.h"
#include "test_util.h"

using namespace esft;

namespace {

TEST(TensorIo, DTypeMapping) {
  for (auto d : {DType::BOOL, DType::U8, DType::I8, DType::I16, DType::I32, DType::I64, DType::F16, DType::BF16,
                 DType::F32, DType::F64, DType::F8_E4M3, DType::F8_E5M2}) {
    EXPECT_EQ(from_scalar_type(to_scalar_type(d)), d) << dtype_name(d);
    EXPECT_EQ(size_t(c10::elementSize(to_scalar_type(d))), dtype_size(d)) << dtype_name(d);
  }
  EXPECT_THROW(from_scalar_type(at::kComplexFloat), Error);
}

TEST(TensorIo, RoundTripOwnsItsMemory) {
  auto dir = test::temp_dir("tensor-io");
  auto base = at::arange(24, at::kFloat).reshape({4, 6}) * 0.25 - 2;
  std::vector<HfTensor> tensors = {
      {"f32.transposed", base.t()},  // non-contiguous: must be written as its logical [6, 4] layout
      {"bf16", base.to(at::kBFloat16)},
      {"f16.slice", base.to(at::kHalf).narrow(1, 2, 3)},
      {"i64", at::arange(-3, 4, at::kLong)},
      {"bool", base > 0},
      {"f64.scalar", at::scalar_tensor(3.5, at::kDouble)},
      {"empty", at::zeros({0, 5})},
  };
  save_safetensors(dir / "t.safetensors", tensors);
  std::map<std::string, at::Tensor> back = load_safetensors(dir / "t.safetensors");
  fs::remove(dir / "t.safetensors");  // the map is gone: loaded tensors must not point into it
  ASSERT_EQ(back.size(), tensors.size());
  for (auto& t : tensors) {
    ASSERT_TRUE(back.count(t.name)) << t.name;
    auto& b = back[t.name];
    EXPECT_EQ(b.scalar_type(), t.tensor.scalar_type()) << t.name;
    EXPECT_EQ(b.sizes(), t.tensor.sizes()) << t.name;
    EXPECT_TRUE(b.is_contiguous()) << t.name;
    EXPECT_TRUE(at::equal(b, t.tensor)) << t.name;
  }

  // Checkpoint directory, sharded: load_tensor by name finds each tensor's shard.
  write_file_atomic(dir / "ckpt/config.json", "{}");
  save_checkpoint_tensors(dir / "ckpt", tensors, 100);
  EXPECT_TRUE(fs::exists(dir / "ckpt/model.safetensors.index.json"));
  Checkpoint ck(dir / "ckpt");
  for (auto& t : tensors) EXPECT_TRUE(at::equal(load_tensor(ck, t.name), t.tensor)) << t.name;
  EXPECT_THROW(load_tensor(ck, "missing"), Error);
}

}  // namespace
