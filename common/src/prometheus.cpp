#include "fedge/common/prometheus.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "fedge/common/error.h"

namespace fedge::prometheus {
namespace {

bool name_char(char c, bool first, bool colon_allowed) {
  const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon_allowed && c == ':');
  return alpha || (!first && c >= '0' && c <= '9');
}

bool valid_name(std::string_view name, bool colon_allowed) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0, colon_allowed)) return false;
  return true;
}

[[noreturn]] void refuse(std::string_view metric, const std::string& what) {
  throw Error(ErrorKind::kInvalidInput, "metric '" + std::string(metric) + "': " + what);
}

void check_labels(std::string_view metric, const Labels& labels, std::string_view reserved) {
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const std::string& name = labels[i].first;
    if (!is_label_name(name))
      refuse(metric, "'" + name + "' is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)");
    if (!reserved.empty() && name == reserved) refuse(metric, "label '" + name + "' is reserved for the writer");
    for (std::size_t j = 0; j < i; ++j)
      if (labels[j].first == name) refuse(metric, "label '" + name + "' is given twice");
  }
}

}  // namespace

bool is_metric_name(std::string_view name) { return valid_name(name, true); }

bool is_label_name(std::string_view name) { return valid_name(name, false) && !name.starts_with("__"); }

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string escape_help(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (const char c : help) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, end);
}

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && !(bounds_[i] > bounds_[i - 1])))
      throw Error(ErrorKind::kInvalidInput, "histogram bounds must be finite and strictly increasing (bound " +
                                                std::to_string(i) + " is " + format_value(bounds_[i]) + ")");
  }
  counts_.assign(bounds_.size() + 1, 0);
}

void Histogram::observe(double value) {
  // The first bucket whose upper bound is >= value (le is inclusive).
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  ++counts_[static_cast<std::size_t>(it - bounds_.begin())];
  sum_ += value;
  ++count_;
}

void TextWriter::family(std::string_view name, std::string_view help, std::string_view type) {
  if (!is_metric_name(name)) refuse(name, "not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)");
  if (type == "counter" && !name.ends_with("_total")) refuse(name, "a counter's name ends in _total");
  if (type != "counter" && name.ends_with("_total")) refuse(name, "only a counter's name ends in _total");
  if (!families_.emplace(name).second) refuse(name, "written twice; write each family once with all its samples");
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  out_ += escape_help(help);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void TextWriter::line(std::string_view name, const Labels& labels, double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (i > 0) out_ += ',';
      out_ += labels[i].first;
      out_ += "=\"";
      out_ += escape_label_value(labels[i].second);
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
  out_ += format_value(value);
  out_ += '\n';
}

void TextWriter::samples(std::string_view name, const std::vector<Sample>& samples, std::string_view reserved) {
  for (const Sample& s : samples) {
    check_labels(name, s.labels, reserved);
    line(name, s.labels, s.value);
  }
}

void TextWriter::counter(std::string_view name, std::string_view help, double value) {
  counter(name, help, std::vector<Sample>{{{}, value}});
}

void TextWriter::counter(std::string_view name, std::string_view help, const std::vector<Sample>& s) {
  family(name, help, "counter");
  samples(name, s);
}

void TextWriter::gauge(std::string_view name, std::string_view help, double value) {
  gauge(name, help, std::vector<Sample>{{{}, value}});
}

void TextWriter::gauge(std::string_view name, std::string_view help, const std::vector<Sample>& s) {
  family(name, help, "gauge");
  samples(name, s);
}

void TextWriter::histogram(std::string_view name, std::string_view help, const Histogram& series) {
  histogram(name, help, std::vector<std::pair<Labels, Histogram>>{{{}, series}});
}

void TextWriter::histogram(std::string_view name, std::string_view help,
                           const std::vector<std::pair<Labels, Histogram>>& series) {
  family(name, help, "histogram");
  const std::string bucket = std::string(name) + "_bucket";
  for (const auto& [labels, h] : series) {
    check_labels(name, labels, "le");
    Labels with_le = labels;
    with_le.emplace_back("le", "");
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < h.counts().size(); ++i) {
      cumulative += h.counts()[i];
      with_le.back().second = i < h.upper_bounds().size() ? format_value(h.upper_bounds()[i]) : "+Inf";
      line(bucket, with_le, static_cast<double>(cumulative));
    }
    line(std::string(name) + "_sum", labels, h.sum());
    line(std::string(name) + "_count", labels, static_cast<double>(h.count()));
  }
}

}  // namespace fedge::prometheus
