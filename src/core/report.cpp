#include "esft/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "esft/error.h"
#include "esft/routing_stats.h"

namespace esft {

namespace {

using json = nlohmann::json;

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

// Viridis, sampled: t in [0, 1] -> "#rrggbb".
std::string viridis(double t) {
  static const double stops[][3] = {{68, 1, 84},    {72, 40, 120},  {62, 74, 137},  {49, 104, 142}, {38, 130, 142},
                                    {31, 158, 137}, {53, 183, 121}, {109, 205, 89}, {180, 222, 44}, {253, 231, 37}};
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * 9;
  int i = std::min(8, int(t));
  double f = t - i;
  int c[3];
  for (int k = 0; k < 3; ++k) c[k] = int(std::lround(stops[i][k] + f * (stops[i + 1][k] - stops[i][k])));
  return fmt::format("#{:02x}{:02x}{:02x}", c[0], c[1], c[2]);
}

// A distinct colour per series (layers, tasks).
std::string series_color(size_t i, size_t n) {
  return viridis(n <= 1 ? 0.3 : 0.05 + 0.85 * double(i) / double(n - 1));
}

// Round tick values covering [lo, hi].
std::vector<double> ticks(double lo, double hi, int want = 5) {
  if (!(hi > lo)) hi = lo + 1;
  double raw = (hi - lo) / want, mag = std::pow(10, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) t.push_back(std::abs(v) < 1e-12 ? 0 : v);
  return t;
}

std::string num(double v) {
  if (v == 0) return "0";
  if (std::abs(v) >= 1000 || std::abs(v) < 0.01) return fmt::format("{:.3g}", v);
  return fmt::format("{:.4g}", v);
}

struct Series {
  std::string name, color;
  std::vector<std::pair<double, double>> points;
  bool dots = false;
};

// A line chart with axes; hlines: horizontal reference lines (value, label).
std::string line_chart(const std::vector<Series>& series, const std::string& xlabel, const std::string& ylabel,
                       std::vector<std::pair<double, std::string>> hlines = {}, double y0 = NAN, double y1 = NAN,
                       int W = 620, int H = 300) {
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (auto& s : series)
    for (auto [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y)) xmin = std::min(xmin, x), xmax = std::max(xmax, x), ymin = std::min(ymin, y), ymax = std::max(ymax, y);
  if (!std::isfinite(xmin)) return "<p class=note>no data</p>";
  if (std::isfinite(y0)) ymin = y0;
  if (std::isfinite(y1)) ymax = y1;
  for (auto& [v, l] : hlines) ymin = std::min(ymin, v), ymax = std::max(ymax, v);
  if (ymax <= ymin) ymax = ymin + 1;
  if (xmax <= xmin) xmax = xmin + 1;
  const int L = 58, R = 16, T = 12, B = 40;
  auto X = [&](double x) { return L + (x - xmin) / (xmax - xmin) * (W - L - R); };
  auto Y = [&](double y) { return T + (1 - (y - ymin) / (ymax - ymin)) * (H - T - B); };
  std::string s = fmt::format("<svg class=chart width={} height={} viewBox='0 0 {} {}'>", W, H, W, H);
  for (double t : ticks(ymin, ymax))
    s += fmt::format("<line x1={} x2={} y1={:.1f} y2={:.1f} class=grid /><text x={} y={:.1f} class=tick text-anchor=end>{}</text>",
                     L, W - R, Y(t), Y(t), L - 6, Y(t) + 4, num(t));
  for (double t : ticks(xmin, xmax, 6))
    s += fmt::format("<line x1={:.1f} x2={:.1f} y1={} y2={} class=axis /><text x={:.1f} y={} class=tick text-anchor=middle>{}</text>",
                     X(t), X(t), H - B, H - B + 4, X(t), H - B + 16, num(t));
  s += fmt::format("<line x1={} x2={} y1={} y2={} class=axis /><line x1={} x2={} y1={} y2={} class=axis />", L, W - R,
                   H - B, H - B, L, L, T, H - B);
  s += fmt::format("<text x={} y={} class=label text-anchor=middle>{}</text>", (L + W - R) / 2, H - 6, esc(xlabel));
  s += fmt::format("<text x=14 y={} class=label text-anchor=middle transform='rotate(-90 14 {})'>{}</text>", (T + H - B) / 2,
                   (T + H - B) / 2, esc(ylabel));
  for (auto& [v, label] : hlines)
    s += fmt::format("<line x1={} x2={} y1={:.1f} y2={:.1f} class=ref /><text x={} y={:.1f} class=reflabel text-anchor=end>{}</text>",
                     L, W - R, Y(v), Y(v), W - R - 4, Y(v) - 4, esc(label));
  for (auto& se : series) {
    std::string pts;
    for (auto [x, y] : se.points)
      if (std::isfinite(y)) pts += fmt::format("{:.1f},{:.1f} ", X(x), Y(y));
    s += fmt::format("<polyline points='{}' fill=none stroke='{}' stroke-width=1.6><title>{}</title></polyline>", pts,
                     se.color, esc(se.name));
    if (se.dots)
      for (auto [x, y] : se.points)
        if (std::isfinite(y))
          s += fmt::format("<circle cx={:.1f} cy={:.1f} r=2.6 fill='{}'><title>{}: {} at {}</title></circle>", X(x), Y(y),
                           se.color, esc(se.name), num(y), num(x));
  }
  return s + "</svg>";
}

std::string legend(const std::vector<std::pair<std::string, std::string>>& items) {
  std::string s = "<div class=legend>";
  for (auto& [name, color] : items) s += fmt::format("<span><i style='background:{}'></i>{}</span>", color, esc(name));
  return s + "</div>";
}

// ---- one task ------------------------------------------------------------------------------

struct TaskData {
  std::string name;
  std::map<int, std::vector<double>> scores;  // layer -> score per expert id
  ExpertSelection sel;
  double top_p;
  std::string selection_source;
};

TaskData load_task(const ReportTask& t, const std::string& score_function, double top_p) {
  TaskData d;
  d.name = t.name;
  if (d.name.empty()) {
    auto dir = fs::absolute(t.scores).lexically_normal();
    if (dir.filename().empty()) dir = dir.parent_path();
    d.name = dir.filename().string();
    if ((d.name == "expert_scores" || d.name == "scores") && dir.has_parent_path()) d.name = dir.parent_path().filename().string();
  }
  json summary;
  if (fs::exists(t.scores / "summary.json")) {
    summary = json::parse(read_file(t.scores / "summary.json"), nullptr, false);
    if (summary.is_discarded()) fail("{}: not valid JSON", (t.scores / "summary.json").string());
  } else {
    summary = summarize_routing_logs(t.scores);
  }
  const std::string key = score_function + "_scores";
  if (!summary.is_object() || !summary.contains(key) || !summary[key].is_object())
    fail("{}: no \"{}\" (not an esft score output?)", (t.scores / "summary.json").string(), key);
  auto index = [&](const std::string& k) {
    int v = -1;
    auto [end, ec] = std::from_chars(k.data(), k.data() + k.size(), v);
    if (ec != std::errc() || end != k.data() + k.size() || v < 0 || v > (1 << 20))
      fail("{}: {} key \"{}\" is not a layer or expert number", t.scores.string(), key, k);
    return v;
  };
  for (auto& [layer, per] : summary[key].items()) {
    auto& v = d.scores[index(layer)];
    if (!per.is_object()) fail("{}: {}[{}] is not an object", t.scores.string(), key, layer);
    for (auto& [e, s] : per.items()) {
      const int id = index(e);
      if (!s.is_number()) fail("{}: {}[{}][{}] is not a score", t.scores.string(), key, layer, e);
      if (int(v.size()) <= id) v.resize(id + 1, 0.0);
      v[id] = s.get<double>();
    }
  }
  d.top_p = top_p >= 0 ? top_p : score_function == "token" ? 0.2 : 0.1;
  if (!t.expert_config.empty()) {
    d.sel = ExpertSelection::from_json_file(t.expert_config);
    d.selection_source = t.expert_config.string();
  } else {
    SelectOptions so;
    so.score_function = score_function;
    so.top_p = d.top_p;
    d.sel = select_experts(summary, so);
    d.selection_source = fmt::format("computed: {} score, top_p {}", score_function, num(d.top_p));
  }
  return d;
}

std::string heatmap(const TaskData& d) {
  int E = 0;
  double vmax = 0;
  for (auto& [l, v] : d.scores) {
    E = std::max(E, int(v.size()));
    for (double x : v) vmax = std::max(vmax, x);
  }
  if (E == 0 || vmax <= 0) return "<p class=note>no scores</p>";
  const int n_layers = int(d.scores.size());
  const double cw = std::clamp(880.0 / E, 3.0, 24.0), ch = std::clamp(420.0 / n_layers, 5.0, 20.0);
  const int L = 64, T = 22, W = int(L + cw * E + 10), H = int(T + ch * n_layers + 44);
  std::string s = fmt::format("<svg class=chart width={} height={} viewBox='0 0 {} {}'>", W, H, W, H);
  const int label_every = std::max(1, int(std::ceil(24.0 / cw)));
  for (int e = 0; e < E; e += label_every)
    s += fmt::format("<text x={:.1f} y={} class=tick text-anchor=middle>{}</text>", L + (e + 0.5) * cw, T - 6, e);
  const int row_every = std::max(1, int(std::ceil(11.0 / ch)));
  int row = 0;
  std::string marks;
  for (auto& [layer, v] : d.scores) {
    const double y = T + row * ch;
    if (row % row_every == 0)
      s += fmt::format("<text x={} y={:.1f} class=tick text-anchor=end>layer {}</text>", L - 6, y + ch / 2 + 4, layer);
    std::set<int> chosen;
    if (auto it = d.sel.experts.find(layer); it != d.sel.experts.end()) chosen.insert(it->second.begin(), it->second.end());
    for (int e = 0; e < int(v.size()); ++e) {
      const bool sel = chosen.count(e) > 0;
      s += fmt::format("<rect x={:.2f} y={:.2f} width={:.2f} height={:.2f} fill='{}'><title>layer {}, expert {}: {}{}</title></rect>",
                       L + e * cw, y, cw, ch, viridis(v[e] / vmax), layer, e, num(v[e]), sel ? " (selected)" : "");
      if (sel)
        marks += fmt::format("<rect x={:.2f} y={:.2f} width={:.2f} height={:.2f} class=sel />", L + e * cw + 0.6, y + 0.6,
                             std::max(0.5, cw - 1.2), std::max(0.5, ch - 1.2));
    }
    ++row;
  }
  s += marks;
  // colour scale
  const double ly = T + n_layers * ch + 14;
  for (int i = 0; i < 100; ++i)
    s += fmt::format("<rect x={:.1f} y={:.1f} width=2.2 height=10 fill='{}' />", L + i * 2.0, ly, viridis(i / 99.0));
  s += fmt::format("<text x={} y={:.1f} class=tick>0</text><text x={} y={:.1f} class=tick text-anchor=end>{}</text>", L,
                   ly + 24, L + 200, ly + 24, num(vmax));
  s += fmt::format("<rect x={} y={:.1f} width=10 height=10 class=sel /><text x={} y={:.1f} class=tick>selected</text>", L + 230,
                   ly, L + 245, ly + 9);
  return s + "</svg>";
}

std::string cumulative_chart(const TaskData& d) {
  std::vector<Series> series;
  std::vector<std::pair<std::string, std::string>> leg;
  size_t i = 0;
  for (auto& [layer, v] : d.scores) {
    auto sorted = v;
    std::sort(sorted.rbegin(), sorted.rend());
    Series s{fmt::format("layer {}", layer), series_color(i++, d.scores.size()), {{0, 0}}};
    double cum = 0;
    for (size_t k = 0; k < sorted.size(); ++k) s.points.push_back({double(k + 1), cum += sorted[k]});
    series.push_back(std::move(s));
  }
  if (series.size() <= 12)
    for (auto& s : series) leg.push_back({s.name, s.color});
  else
    leg = {{series.front().name, series.front().color}, {series.back().name, series.back().color}};
  return line_chart(series, "experts, in descending score order", "cumulative score",
                    {{d.top_p, fmt::format("top_p {}", num(d.top_p))}}, 0.0, 1.0) +
         legend(leg);
}

std::string selected_table(const TaskData& d) {
  int E = 0;
  for (auto& [l, v] : d.scores) E = std::max(E, int(v.size()));
  // bar chart of counts per layer
  std::vector<std::pair<int, int>> counts;
  int cmax = 1;
  for (auto& [layer, v] : d.scores) {
    auto it = d.sel.experts.find(layer);
    int n = it == d.sel.experts.end() ? 0 : int(it->second.size());
    counts.push_back({layer, n});
    cmax = std::max(cmax, n);
  }
  const int W = 620, H = 200, L = 40, B = 30, T = 10;
  const double bw = double(W - L - 10) / std::max<size_t>(1, counts.size());
  std::string s = fmt::format("<svg class=chart width={} height={} viewBox='0 0 {} {}'>", W, H, W, H);
  for (double t : ticks(0, cmax, 4)) {
    const double y = T + (1 - t / cmax) * (H - T - B);
    s += fmt::format("<line x1={} x2={} y1={:.1f} y2={:.1f} class=grid /><text x={} y={:.1f} class=tick text-anchor=end>{}</text>",
                     L, W - 10, y, y, L - 4, y + 4, num(t));
  }
  const int label_every = std::max(1, int(std::ceil(22.0 / bw)));
  for (size_t i = 0; i < counts.size(); ++i) {
    const double h = double(counts[i].second) / cmax * (H - T - B), x = L + i * bw;
    s += fmt::format("<rect x={:.1f} y={:.1f} width={:.1f} height={:.1f} fill='{}'><title>layer {}: {} expert(s)</title></rect>",
                     x + 1, H - B - h, std::max(1.0, bw - 2), h, viridis(0.35), counts[i].first, counts[i].second);
    if (i % label_every == 0)
      s += fmt::format("<text x={:.1f} y={} class=tick text-anchor=middle>{}</text>", x + bw / 2, H - B + 14, counts[i].first);
  }
  s += fmt::format("<text x={} y={} class=label text-anchor=middle>layer</text></svg>", (L + W) / 2, H - 2);
  std::string t = "<details><summary>selected expert ids per layer</summary><table><tr><th>layer</th><th>n</th><th>experts</th></tr>";
  for (auto& [layer, ids] : d.sel.experts) {
    std::string list;
    for (int id : ids) list += (list.empty() ? "" : ", ") + std::to_string(id);
    t += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td></tr>", layer, ids.size(), list);
  }
  t += "</table></details>";
  return s + t;
}

// ---- training runs -----------------------------------------------------------------------------

std::string run_section(const fs::path& run) {
  const fs::path file = fs::is_directory(run) ? run / "metrics.jsonl" : run;
  std::ifstream in(file);
  if (!in) fail("--run {}: cannot open {}", run.string(), file.string());
  Series loss{"train loss", viridis(0.25), {}}, eval{"eval loss", "#e4572e", {}, true};
  int lineno = 0;
  int64_t skipped = 0, steps = 0;
  for (std::string line; std::getline(in, line);) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number())
      fail("{}:{}: not a metrics record", file.string(), lineno);
    const double step = j["step"].get<double>();
    ++steps;
    if (j.contains("skipped")) ++skipped;
    if (j.contains("loss") && j["loss"].is_number()) loss.points.push_back({step, j["loss"].get<double>()});
    if (j.contains("eval_loss") && j["eval_loss"].is_number()) eval.points.push_back({step, j["eval_loss"].get<double>()});
  }
  std::vector<Series> series = {loss};
  if (!eval.points.empty()) series.push_back(eval);
  std::string s = fmt::format("<h3>{}</h3>", esc(file.string()));
  s += fmt::format("<p class=note>{} steps{}{}</p>", steps,
                   eval.points.empty() ? "" : fmt::format(", {} evaluations", eval.points.size()),
                   skipped ? fmt::format(", {} skipped for a non-finite loss", skipped) : "");
  s += line_chart(series, "step", "loss");
  std::vector<std::pair<std::string, std::string>> leg;
  for (auto& se : series) leg.push_back({se.name, se.color});
  return s + legend(leg);
}

// ---- several tasks ----------------------------------------------------------------------------

std::string overlap_section(const std::vector<TaskData>& tasks) {
  auto pairs = [](const TaskData& d) {
    std::set<std::pair<int, int>> s;
    for (auto& [l, ids] : d.sel.experts)
      for (int e : ids) s.insert({l, e});
    return s;
  };
  std::vector<std::set<std::pair<int, int>>> sets;
  for (auto& t : tasks) sets.push_back(pairs(t));
  const size_t n = tasks.size();
  const int cell = 74, L = 150, T = 76;
  const int W = L + cell * int(n) + 10, H = T + cell * int(n) + 10;
  std::string s = fmt::format("<svg class=chart width={} height={} viewBox='0 0 {} {}'>", W, H, W, H);
  for (size_t i = 0; i < n; ++i) {
    s += fmt::format("<text x={} y={} class=tick text-anchor=end>{}</text>", L - 8, T + cell * i + cell / 2 + 4, esc(tasks[i].name));
    s += fmt::format("<text x={} y={} class=tick transform='rotate(-40 {} {})'>{}</text>", L + cell * i + cell / 2,
                     T - 8, L + cell * i + cell / 2, T - 8, esc(tasks[i].name));
    for (size_t j = 0; j < n; ++j) {
      size_t shared = 0;
      for (auto& p : sets[i]) shared += sets[j].count(p);
      const size_t uni = sets[i].size() + sets[j].size() - shared;
      const double jac = uni ? double(shared) / uni : 0;
      s += fmt::format("<rect x={} y={} width={} height={} fill='{}' stroke='#fff'><title>{} and {}: {} shared, Jaccard {:.0f}%</title></rect>",
                       L + cell * j, T + cell * i, cell, cell, viridis(jac), esc(tasks[i].name), esc(tasks[j].name), shared,
                       100 * jac);
      s += fmt::format("<text x={} y={} text-anchor=middle class='cellnum {}'>{}</text><text x={} y={} text-anchor=middle class='cellsub {}'>{:.0f}%</text>",
                       L + cell * j + cell / 2, T + cell * i + cell / 2, jac > 0.6 ? "dark" : "", shared,
                       L + cell * j + cell / 2, T + cell * i + cell / 2 + 16, jac > 0.6 ? "dark" : "", 100 * jac);
    }
  }
  s += "</svg>";
  // Per layer: how many tasks select each expert.
  std::string p = "<p class=note>Cells: experts (layer, id) selected by both tasks, and their Jaccard overlap "
                  "(shared / selected by either). Specialised tasks share few experts.</p>";
  return s + p;
}

const char* kStyle = R"(
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#1d2330;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;border-bottom:1px solid #dde;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 4px}.note{color:#556;margin:4px 0 8px}
.chart{display:block;max-width:100%;height:auto;margin:6px 0}.grid{stroke:#e6e8ef}.axis{stroke:#889}
.tick{font-size:10.5px;fill:#445}.label{font-size:12px;fill:#334}.ref{stroke:#e4002b;stroke-dasharray:5 4}
.reflabel{font-size:11px;fill:#e4002b}.sel{fill:none;stroke:#ff2d55;stroke-width:1.6}
.legend span{display:inline-block;margin-right:12px;font-size:12px}.legend i{display:inline-block;width:12px;height:3px;margin-right:4px;vertical-align:middle}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #e1e3ea;padding:2px 6px;text-align:left}
.cellnum{font-size:15px;font-weight:600;fill:#fff}.cellsub{font-size:10.5px;fill:#eef}.cellnum.dark,.cellsub.dark{fill:#111}
.stats{display:flex;gap:18px;flex-wrap:wrap}.stats div{background:#f4f5f9;border-radius:6px;padding:6px 10px}
.stats b{display:block;font-size:16px}
)";

}  // namespace

std::string make_report(const ReportOptions& opt) {
  if (opt.tasks.empty()) fail("esft report: give at least one --scores directory");
  if (opt.score_function != "token" && opt.score_function != "gate")
    fail("--score-function must be token or gate, not \"{}\"", opt.score_function);
  std::vector<TaskData> tasks;
  for (auto& t : opt.tasks) tasks.push_back(load_task(t, opt.score_function, opt.top_p));

  std::string h = "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><meta name=viewport content='width=device-width'>";
  h += fmt::format("<title>{}</title><style>{}</style></head><body>", esc(opt.title), kStyle);
  h += fmt::format("<h1>{}</h1><p class=note>{} score. Expert score per layer: {}. Selection per layer: experts in "
                   "descending score order until their scores add up to top_p.</p>",
                   esc(opt.title), opt.score_function,
                   opt.score_function == "token" ? "the share of routed (token, slot) pairs that go to the expert"
                                                 : "the mean gate weight the expert gets per token");
  // Several tasks: the overview first.
  if (tasks.size() > 1) h += "<h2>Overlap of the selected experts between tasks</h2>" + overlap_section(tasks);
  for (auto& d : tasks) {
    int E = 0;
    for (auto& [l, v] : d.scores) E = std::max(E, int(v.size()));
    const int64_t n_sel = d.sel.n_experts();
    h += fmt::format("<h2>{}</h2><p class=note>selection: {}</p>", esc(d.name), esc(d.selection_source));
    h += fmt::format("<div class=stats><div><b>{}</b>MoE layers</div><div><b>{}</b>experts per layer</div><div><b>{}</b>"
                     "selected</div><div><b>{:.1f}%</b>of routed experts</div><div><b>{:.1f}</b>per layer on average</div></div>",
                     d.scores.size(), E, n_sel, d.scores.empty() || !E ? 0.0 : 100.0 * n_sel / (double(E) * d.scores.size()),
                     d.scores.empty() ? 0.0 : double(n_sel) / d.scores.size());
    h += "<h3>Expert scores (selected experts outlined)</h3>" + heatmap(d);
    h += "<h3>Cumulative score against top_p</h3>" + cumulative_chart(d);
    h += "<h3>Selected experts per layer</h3>" + selected_table(d);
  }
  if (!opt.runs.empty()) {
    h += "<h2>Training</h2>";
    for (auto& r : opt.runs) h += run_section(r);
  }
  return h + "<p class=note>written by esft " ESFT_VERSION "</p></body></html>\n";
}

}  // namespace esft
