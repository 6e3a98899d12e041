// Python-compatible shuffling, scoring sample selection and packing of samples into rows.
#include <fmt/format.h>

#include <algorithm>

#include "esft/data.h"
#include "esft/error.h"

namespace esft {

// ---- Python's random.seed(int) + random.shuffle, exactly ------------------------------------
namespace {
class PyRandom {
 public:
  explicit PyRandom(uint64_t seed) {
    // init_by_array with the seed's 32-bit words (little-endian), as CPython seeds from an int.
    std::vector<uint32_t> key;
    do {
      key.push_back(uint32_t(seed & 0xffffffffu));
      seed >>= 32;
    } while (seed);
    init_genrand(19650218u);
    uint32_t i = 1, j = 0;
    size_t k = std::max<size_t>(N, key.size());
    for (; k; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key[j] + j;
      ++i, ++j;
      if (i >= N) mt_[0] = mt_[N - 1], i = 1;
      if (j >= key.size()) j = 0;
    }
    for (k = N - 1; k; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) - i;
      if (++i >= N) mt_[0] = mt_[N - 1], i = 1;
    }
    mt_[0] = 0x80000000u;
  }
  uint32_t genrand() {
    if (mti_ >= N) {
      for (int kk = 0; kk < N; ++kk) {
        uint32_t y = (mt_[kk] & 0x80000000u) | (mt_[(kk + 1) % N] & 0x7fffffffu);
        mt_[kk] = mt_[(kk + M) % N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
      }
      mti_ = 0;
    }
    uint32_t y = mt_[mti_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
  }
  // random._randbelow_with_getrandbits(n)
  uint64_t randbelow(uint64_t n) {
    int k = 0;
    while ((n >> k) != 0) ++k;  // n.bit_length()
    uint64_t r = getrandbits(k);
    while (r >= n) r = getrandbits(k);
    return r;
  }

 private:
  static constexpr int N = 624, M = 397;
  void init_genrand(uint32_t s) {
    mt_[0] = s;
    for (mti_ = 1; mti_ < N; ++mti_) mt_[mti_] = 1812433253u * (mt_[mti_ - 1] ^ (mt_[mti_ - 1] >> 30)) + uint32_t(mti_);
  }
  uint64_t getrandbits(int k) {
    if (k <= 32) return genrand() >> (32 - k);
    uint64_t lo = genrand(), hi = genrand() >> (64 - k);
    return (hi << 32) | lo;
  }
  uint32_t mt_[N];
  int mti_ = N + 1;
};
}  // namespace

void python_shuffle(std::vector<size_t>& x, uint64_t seed) {
  PyRandom r(seed);
  for (size_t i = x.size(); i-- > 1;) std::swap(x[i], x[r.randbelow(i + 1)]);
}

std::vector<size_t> select_scoring_samples(const std::vector<Sample>& samples, int64_t n_tokens, uint64_t seed, int rank,
                                           int world, int64_t max_length, int64_t* tokens) {
  ESFT_CHECK(world >= 1 && rank >= 0 && rank < world, "scoring shard {} of {}: rank must be in [0, world size)", rank, world);
  std::vector<size_t> order(samples.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  python_shuffle(order, seed);
  const int64_t budget = n_tokens / world;
  std::vector<size_t> out;
  int64_t done = 0;
  for (size_t j = rank; j < order.size(); j += world) {
    if (n_tokens > 0 && done >= budget) break;
    out.push_back(order[j]);
    int64_t n = samples[order[j]].input_ids.size();
    done += max_length > 0 ? std::min(n, max_length) : n;
  }
  if (tokens) *tokens = done;
  return out;
}

// ---- packing ------------------------------------------------------------------------------
// none:     one sample per row, at its own length (the batcher pads rows to the batch's longest).
// document: samples concatenated greedily into rows of at most max_length (a sample that does not
//           fit starts a new row); positions restart and doc_ids differ per sample, so attention
//           never crosses samples. The first label of each sample is masked: under the shifted
//           loss it would be predicted from the previous sample's last token.
// causal:   the ESFT reference's get_examples_from_buffer_pad, in file order: windows of exactly
//           max_length filled with consecutive samples; a sample longer than the room left is cut
//           to the room (truncation left keeps its tail, as the reference does; right keeps its
//           head) and the rest of it is dropped; plain causal attention over the whole window
//           (doc_ids all 0, positions 0..L-1); the last window is padded to max_length (pad_id,
//           label -100, doc_id -1). The reference's random drop of a sample's first token
//           (random_concat_ratio 0.2) is not reproduced, and an empty last window is not emitted.
// Samples longer than max_length are truncated per `truncation` in every mode and counted in
// PackStats (truncated_samples / dropped_tokens); causal cuts at a window end are counted apart
// (cut_samples / cut_tokens).
namespace {

struct Span {
  const Sample* s;
  size_t begin, n;
};

// The part of sample s kept when only `room` tokens fit.
Span fit(const Sample& s, size_t room, bool keep_tail) {
  size_t n = std::min(s.input_ids.size(), room);
  return {&s, keep_tail ? s.input_ids.size() - n : 0, n};
}

void append(PackedRow& row, const Span& sp, int32_t doc, bool restart_positions) {
  for (size_t i = 0; i < sp.n; ++i) {
    row.input_ids.push_back(sp.s->input_ids[sp.begin + i]);
    row.labels.push_back(restart_positions && i == 0 ? kIgnoreIndex : sp.s->labels[sp.begin + i]);
    row.position_ids.push_back(restart_positions ? int32_t(i) : int32_t(row.position_ids.size()));
    row.doc_ids.push_back(doc);
  }
}

}  // namespace

std::vector<PackedRow> pack_samples(const std::vector<Sample>& samples, const PackOptions& opt, PackStats* stats) {
  if (opt.packing != "none" && opt.packing != "causal" && opt.packing != "document")
    fail("--packing must be none, causal or document, not \"{}\"", opt.packing);
  if (opt.truncation != "left" && opt.truncation != "right")
    fail("--truncation must be left or right, not \"{}\"", opt.truncation);
  ESFT_CHECK(opt.max_length > 0, "--max-length must be positive");
  const size_t L = size_t(opt.max_length);
  const bool keep_tail = opt.truncation == "left";
  PackStats st;
  std::vector<PackedRow> rows;
  PackedRow cur;
  int32_t doc = 0;
  auto flush = [&] {
    if (!cur.input_ids.empty()) rows.push_back(std::move(cur));
    cur = PackedRow{};
    doc = 0;
  };
  for (auto& s : samples) {
    ESFT_CHECK(s.labels.size() == s.input_ids.size(), "a sample has {} labels for {} input_ids", s.labels.size(),
               s.input_ids.size());
    const size_t n = s.input_ids.size();
    if (n == 0) continue;
    if (n > L) st.truncated_samples++, st.dropped_tokens += int64_t(n - L);
    if (opt.packing == "causal") {
      size_t room = L - cur.input_ids.size();
      const size_t wanted = std::min(n, L);
      if (wanted > room) st.cut_samples++, st.cut_tokens += int64_t(wanted - room);
      append(cur, fit(s, room, keep_tail), 0, false);
      if (cur.input_ids.size() >= L) flush();
      continue;
    }
    Span sp = fit(s, L, keep_tail);
    if (opt.packing == "none" || cur.input_ids.size() + sp.n > L) flush();
    append(cur, sp, doc++, true);
  }
  if (opt.packing == "causal" && !cur.input_ids.empty()) {
    // pad the last window to max_length, as the reference does
    while (cur.input_ids.size() < L) {
      cur.input_ids.push_back(opt.pad_id);
      cur.labels.push_back(kIgnoreIndex);
      cur.position_ids.push_back(int32_t(cur.position_ids.size()));
      cur.doc_ids.push_back(-1);
    }
  }
  flush();
  if (stats) *stats = st;
  return rows;
}

}  // namespace esft
