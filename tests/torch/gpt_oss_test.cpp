// GPT-OSS pieces below the model: MXFP4 dequantisation bit for bit against transformers, the
// YaRN tables of the released config against transformers, packed (MXFP4) frozen expert banks
// against dense ones (outputs and gradients, splits, export), and the fused sink attention
// against the eager one (outputs and gradients with sliding windows and packed documents).
// ESFT_TEST_DEVICE=cuda runs the device-dependent parts on the GPU as well.
#include <gtest/gtest.h>

#include "esft/error.h"
#include "esft/model.h"
#include "esft/nn/attention.h"
#include "esft/nn/experts.h"
#include "esft/nn/packed_experts.h"
#include "esft/nn/rope.h"
#include "esft/tensor_io.h"
#include "test_util.h"

using namespace esft;
using namespace esft::nn;

namespace {

std::string test_device() {
  const char* d = std::getenv("ESFT_TEST_DEVICE");
  return d ? d : "cpu";
}
double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.cpu().to(at::kDouble) - b.cpu().to(at::kDouble)).abs().max().item<double>();
}
double rel_diff(const at::Tensor& a, const at::Tensor& ref) {
  return max_abs_diff(a, ref) / std::max(ref.abs().max().item<double>(), 1e-12);
}

TEST(Mxfp4, DequantizationIsBitEqualToTransformers) {
  auto dir = test::temp_dir("mxfp4-dequant");
  test::run_python("gpt_oss_reference.py", "mxfp4 " + (dir / "ref.safetensors").string());
  auto ref = load_safetensors(dir / "ref.safetensors");
  for (const std::string dev : {std::string("cpu"), test_device()}) {
    auto blocks = ref["blocks"].to(dev), scales = ref["scales"].to(dev);
    for (auto [name, dtype, int_view] : {std::tuple{"bf16", at::kBFloat16, at::kShort}, {"fp32", at::kFloat, at::kInt}}) {
      // transformers returns [E, G*32, R]; ours is [E, R, G*32].
      auto ours = mxfp4_dequantize(blocks, scales, dtype).transpose(1, 2).contiguous().cpu();
      const auto& theirs = ref[name];
      ASSERT_EQ(ours.sizes(), theirs.sizes());
      EXPECT_TRUE(at::equal(ours.view(int_view), theirs.view(int_view))) << name << " on " << dev;
      // The extremes are there: subnormals from scale 0, infinities and 2^127 from scale 255.
      EXPECT_TRUE(theirs.isinf().any().item<bool>());
      EXPECT_GT(theirs.abs().to(at::kFloat).masked_fill(theirs.eq(0), 1).min().item<float>(), 0);
      EXPECT_LT(theirs.abs().to(at::kFloat).masked_fill(theirs.eq(0), 1).min().item<float>(), 1e-38);
    }
    if (dev == "cpu" && test_device() == "cpu") break;
  }
  EXPECT_THROW(mxfp4_dequantize(ref["blocks"].narrow(-1, 0, 8), ref["scales"], at::kFloat), Error);
}

// The released gpt-oss config's YaRN (head_dim 64, factor 32, truncate false, theta 150000).
TEST(GptOss, YarnTablesEqualTransformers) {
  auto dir = test::temp_dir("gpt-oss-rope");
  nlohmann::json cfg = {{"hidden_size", 2880}, {"num_attention_heads", 64}, {"head_dim", 64},
                        {"max_position_embeddings", 131072}, {"rope_theta", 150000.0},
                        {"rope_scaling", {{"beta_fast", 32.0}, {"beta_slow", 1.0}, {"factor", 32.0},
                                          {"original_max_position_embeddings", 4096}, {"rope_type", "yarn"},
                                          {"truncate", false}}}};
  write_file_atomic(dir / "config.json", cfg.dump());
  test::run_python("gpt_oss_reference.py", "rope " + (dir / "config.json").string() + " " + (dir / "ref.safetensors").string());
  auto ref = load_safetensors(dir / "ref.safetensors");
  Rope rope(cfg, 64, "config.json");
  EXPECT_NEAR(rope.attention_scaling(), ref["attention_scaling"].item<double>(), 1e-7);
  auto [c, s] = rope.cos_sin(ref["position_ids"], at::kFloat);
  // Ours is cat(freqs, freqs); transformers' GPT-OSS rotation uses the 32 frequencies once.
  EXPECT_LT(max_abs_diff(c.narrow(-1, 0, 32), ref["cos"]), 1e-6);
  EXPECT_LT(max_abs_diff(s.narrow(-1, 32, 32), ref["sin"]), 1e-6);
  // truncate matters: with it the tables differ.
  cfg["rope_scaling"]["truncate"] = true;
  EXPECT_GT(max_abs_diff(Rope(cfg, 64, "config.json").cos_sin(ref["position_ids"], at::kFloat).first.narrow(-1, 0, 32),
                         ref["cos"]),
            1e-3);
}

// ---- packed expert banks ----------------------------------------------------------------------

struct PackedFixture {
  ExpertsSpec spec;
  at::Tensor gub, gus, dnb, dns, gu_bias, dn_bias;
  PackedFixture(const std::string& dev) {
    spec.n_experts = 6, spec.hidden = 64, spec.inter = 32;
    spec.activation = ExpertActivation::ClampedSwiGLU, spec.bias = true;
    auto g = at::make_generator<at::CPUGeneratorImpl>(3);
    auto bytes = [&](std::vector<int64_t> shape, int64_t lo, int64_t hi) { return at::randint(lo, hi, shape, g, at::kByte).to(dev); };
    const int64_t E = spec.n_experts, H = spec.hidden, I = spec.inter;
    gub = bytes({E, 2 * I, H / 32, 16}, 0, 256), gus = bytes({E, 2 * I, H / 32}, 123, 126);
    dnb = bytes({E, H, I / 32, 16}, 0, 256), dns = bytes({E, H, I / 32}, 119, 122);
    gu_bias = at::randn({E, 2 * I}, g).to(dev), dn_bias = at::randn({E, H}, g).to(dev);
  }
  ExpertBanks packed(at::ScalarType dtype) const {
    ExpertWeights w;
    w.gate_up_bias = gu_bias.to(dtype), w.down_bias = dn_bias.to(dtype);
    w.packed = std::make_shared<Mxfp4Experts>(gub, gus, dnb, dns, dtype);
    return ExpertBanks(spec, w, at::kBFloat16);
  }
  ExpertBanks dense(at::ScalarType dtype) const {
    return ExpertBanks(spec, {mxfp4_dequantize(gub, gus, dtype), mxfp4_dequantize(dnb, dns, dtype), gu_bias.to(dtype),
                              dn_bias.to(dtype)},
                       at::kBFloat16);
  }
};

// Rows grouped by slot: counts per slot (one slot without rows), x random.
std::pair<at::Tensor, at::Tensor> rows(const ExpertsSpec& spec, const std::string& dev, at::ScalarType dtype) {
  auto counts = at::tensor(std::vector<int64_t>{3, 0, 5, 2, 4, 1}, at::kLong).to(dev);
  auto g = at::make_generator<at::CPUGeneratorImpl>(9);
  auto x = at::randn({15, spec.hidden}, g).to(dev, dtype).set_requires_grad(true);
  return {x, counts};
}

std::vector<int64_t> host(const at::Tensor& t) {
  auto c = t.cpu();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

TEST(PackedExperts, BankEqualsDenseBankWithDequantizedWeights) {
  const auto dev = test_device();
  const auto dtype = dev == "cpu" ? at::kFloat : at::kBFloat16;
  PackedFixture f(dev);
  auto packed = f.packed(dtype), dense = f.dense(dtype);
  for (auto* b : {&packed, &dense}) b->split({4, 1});
  EXPECT_EQ(packed.trainable_ids(), dense.trainable_ids());
  EXPECT_TRUE(at::equal(packed.slot_of_expert(), dense.slot_of_expert()));
  auto [x, counts] = rows(f.spec, dev, dtype);
  auto x2 = x.detach().clone().set_requires_grad(true);
  auto hc = host(counts);
  auto yp = packed.compute(x, counts, hc), yd = dense.compute(x2, counts, hc);
  const double tol = dtype == at::kFloat ? 1e-5 : 2e-2;
  EXPECT_LT(rel_diff(yp, yd), tol);
  auto gy = at::randn_like(yp);
  (yp * gy).sum().backward();
  (yd * gy).sum().backward();
  EXPECT_LT(rel_diff(x.grad(), x2.grad()), tol) << "input gradient through the packed frozen experts";
  auto tp = packed.trainable(), td = dense.trainable();
  for (auto [a, b] : {std::pair{tp.gate_up, td.gate_up}, {tp.down, td.down}, {tp.gate_up_bias, td.gate_up_bias},
                      {tp.down_bias, td.down_bias}}) {
    ASSERT_TRUE(a.grad().defined());
    EXPECT_EQ(a.scalar_type(), at::kFloat) << "trainable experts are fp32 masters";
    EXPECT_TRUE(at::equal(a.detach(), b.detach())) << "masters dequantized exactly";
    EXPECT_LT(rel_diff(a.grad(), b.grad()), tol);
  }
  for (int64_t e = 0; e < f.spec.n_experts; ++e) {  // export reads every expert, packed ones expanded
    auto a = packed.expert(e), b = dense.expert(e);
    EXPECT_TRUE(at::equal(a.gate_up.to(at::kFloat), b.gate_up.to(at::kFloat))) << e;
    EXPECT_TRUE(at::equal(a.down_bias.to(at::kFloat), b.down_bias.to(at::kFloat))) << e;
  }
}

TEST(PackedExperts, SplitsKeepTrainedExpertsAndRefuseToRepackThem) {
  PackedFixture f("cpu");
  auto banks = f.packed(at::kFloat);
  banks.split({2});
  {
    at::NoGradGuard ng;
    banks.trainable().gate_up.add_(1.0);  // "trained"
  }
  auto trained = banks.expert(2).gate_up.clone();
  banks.split({2, 5});  // adding experts keeps the trained one's weights
  EXPECT_EQ(banks.trainable_ids(), (std::vector<int64_t>{2, 5}));
  EXPECT_TRUE(at::equal(banks.expert(2).gate_up, trained));
  EXPECT_TRUE(at::equal(banks.expert(5).gate_up, f.dense(at::kFloat).expert(5).gate_up));
  EXPECT_THROW(banks.split({5}), Error) << "expert 2 would lose its training";
  EXPECT_THROW(banks.set_expert(0, banks.expert(0)), Error) << "packed frozen experts are read-only";
  banks.set_expert(5, banks.expert(2));  // trainable ones can be overwritten (adapter load)
  EXPECT_TRUE(at::equal(banks.expert(5).gate_up, trained));
  auto counts = at::tensor(std::vector<int64_t>{0, 0, 0, 0, 0, 0}, at::kLong);
  EXPECT_EQ(banks.compute(at::zeros({0, f.spec.hidden}), counts, host(counts)).size(0), 0);
}

// ---- fused sink attention ----------------------------------------------------------------------

// Fused against eager (CPU fp32, the reference path): outputs and the gradients of q, k, v and
// the sinks, for causal rows, a sliding window and packed documents, GQA 2:1. On a GPU the fused
// path is flash attention in bf16 (varlen, window), compared with bf16 tolerances.
TEST(SinkAttention, FusedEqualsEagerWithGradients) {
  const auto dev = test_device();
  const bool cuda = dev != "cpu";
  const int64_t B = 2, N = 4, Nkv = 2, S = 13, D = 16;
  auto g = at::make_generator<at::CPUGeneratorImpl>(11);
  auto q0 = at::randn({B, N, S, D}, g), k0 = at::randn({B, Nkv, S, D}, g), v0 = at::randn({B, Nkv, S, D}, g);
  auto sinks0 = at::randn({N}, g) * 2, gout = at::randn({B, N, S, D}, g);
  auto doc = at::tensor(std::vector<int64_t>{0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3},
                        at::kLong).view({B, S});
  const double scale = 0.3;
  for (auto [window, docs] : {std::pair{int64_t(0), false}, {int64_t(4), false}, {int64_t(0), true}, {int64_t(3), true}}) {
    // The mask (eager; the CPU kernel) and the same as sequences over the flattened rows (flash).
    auto layout = [&, window = window, docs = docs](const std::string& on, bool sequences) {
      AttentionLayout l;
      l.window = window;
      l.mask = attention_mask(docs ? doc : at::Tensor(), S, window, at::Device(on));
      if (sequences) {
        Batch b{at::zeros({B, S}, at::kLong), {}, {}, docs ? doc : at::zeros({B, S}, at::kLong)};
        add_document_layout(b);
        l.cu_seqlens = b.cu_seqlens.to(on), l.max_seqlen = b.max_seqlen;
      }
      return l;
    };
    auto run = [&](bool fused, const std::string& on, at::ScalarType dtype) {
      auto leaf = [&](const at::Tensor& t) { return t.to(on, dtype).detach().set_requires_grad(true); };
      auto q = leaf(q0), k = leaf(k0), v = leaf(v0), sinks = leaf(sinks0);
      // attention's [B,S,N,D] inputs as views of the [B,N,S,D] leaves; [B,S,N*D] back to [B,N,S,D]
      auto bsnd = [](const at::Tensor& x) { return x.transpose(1, 2); };
      auto out = (fused ? fused_sink_attention(bsnd(q), bsnd(k), bsnd(v), layout(on, true), scale, sinks)
                        : attention(bsnd(q), bsnd(k), bsnd(v), layout(on, false), scale, sinks))
                     .view({B, S, N, D})
                     .transpose(1, 2);
      (out.to(at::kFloat) * gout.to(on)).sum().backward();
      return std::vector<at::Tensor>{out.detach(), q.grad(), k.grad(), v.grad(), sinks.grad()};
    };
    auto eager = run(false, "cpu", at::kFloat);
    auto fused = cuda ? run(true, dev, at::kBFloat16) : run(true, "cpu", at::kFloat);
    const double tol = cuda ? 3e-2 : 1e-5;
    const char* what[] = {"out", "dq", "dk", "dv", "dsinks"};
    for (size_t i = 0; i < eager.size(); ++i)
      EXPECT_LT(rel_diff(fused[i], eager[i]), tol) << what[i] << " window " << window << " docs " << docs;
    EXPECT_GT(eager[4].abs().max().item<double>(), 0) << "the sinks get a gradient";
  }
}

}  // namespace

namespace {
// esft bench builds GPT-OSS in memory as released: random MXFP4 experts, kept packed.
TEST(GptOss, RandomMxfp4ModelInMemory) {
  nlohmann::json cfg = {{"architectures", {"GptOssForCausalLM"}}, {"vocab_size", 64}, {"hidden_size", 64},
                        {"intermediate_size", 32}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                        {"num_key_value_heads", 2}, {"head_dim", 16}, {"num_local_experts", 4},
                        {"num_experts_per_tok", 2}, {"sliding_window", 4},
                        {"quantization_config", {{"quant_method", "mxfp4"}}}};
  auto model = build_random_model(cfg, LoadOptions{"cpu", at::kFloat}, 3);
  ExpertSelection sel;
  sel.experts[1] = {2};
  model->configure_training(sel);
  auto ids = at::randint(0, 64, {2, 9}, at::kLong);
  auto out = model->forward(Batch{ids, ids, {}, {}}, {});
  EXPECT_TRUE(at::isfinite(out.logits).all().item<bool>());
  (out.loss_sum / double(out.n_loss_tokens)).backward();
  for (auto& t : model->trainable_tensors()) EXPECT_TRUE(t.tensor.grad().defined()) << t.name;
  // The packed experts are MXFP4: their values are FP4 numbers times powers of two.
  auto full = model->full_tensors();
  for (auto& t : full)
    if (t.name == "model.layers.0.mlp.experts.down_proj") {
      EXPECT_EQ(t.tensor.scalar_type(), at::kBFloat16);
      auto a = t.tensor.to(at::kFloat).abs();
      auto m = at::frexp(a);  // mantissa in [0.5, 1): FP4 magnitudes 1, 1.5 (x 2^k) give 0.5 or 0.75
      auto mant = std::get<0>(m).masked_select(a > 0);
      EXPECT_TRUE(((mant == 0.5) | (mant == 0.75)).all().item<bool>());
    }
}
}  // namespace
