// The Jinja interpreter (inference/jinja.h) on its own: what chat templates
// use, where it follows Python's Jinja, and hostile templates, which must end
// in an Error naming the position, within the limits, never a crash.
#include <catch2/catch.hpp>

#include "fedge/common/error.h"
#include "fedge/inference/jinja.h"

using fedge::inference::jinja::Limits;
using fedge::inference::jinja::Template;
using Json = nlohmann::ordered_json;

namespace {

std::string render(std::string_view source, const Json& context = Json::object(), Limits limits = {}) {
  return Template(source, limits).render(context);
}

}  // namespace

TEST_CASE("jinja: statements, expressions, filters and methods of real chat templates") {
  const Json messages = Json::array({{{"role", "system"}, {"content", " Be brief. "}},
                                     {{"role", "user"}, {"content", "Hi"}}});
  const Json ctx = {{"messages", messages}, {"add_generation_prompt", true}, {"bos_token", "<s>"}};
  CHECK(render("{{ bos_token }}{% for m in messages %}{{ m['role'] }}:{{ m.content|trim }};{% endfor %}", ctx) ==
        "<s>system:Be brief.;user:Hi;");
  CHECK(render("{% if messages[0]['role'] == 'system' %}{% set rest = messages[1:] %}{% endif %}{{ rest|length }}", ctx) ==
        "1");
  CHECK(render("{{ messages|tojson }}", ctx) ==
        R"([{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi"}])");
  CHECK(render("{%- set ns = namespace(found=false) -%}{%- for m in messages[::-1] -%}"
               "{%- if m.role == 'user' and not ns.found -%}{%- set ns.found = true -%}{{ m.content }}{%- endif -%}"
               "{%- endfor -%}",
               ctx) == "Hi");
  CHECK(render("{{ 'a</think>b'.split('</think>')[0].rstrip('\\n') }}|{{ x is not defined }}|{{ none is none }}") ==
        "a|True|True");
  CHECK(render("{{ 10 // 3 }} {{ -7 % 3 }} {{ 2.0 }} {{ 1 / 4 }} {{ 'ab' * 2 }}") == "3 2 2.0 0.25 abab");
  CHECK(render("{{ -(-9223372036854775807 - 1) }} {{ 'abc'[1::9223372036854775807] }}") == "-9223372036854775808 b");
  CHECK(render("{% for k, v in {'b': 1, 'a': 2}|items %}{{ k }}{{ v }}{% endfor %}") == "b1a2");  // insertion order
}

TEST_CASE("jinja: Hugging Face's whitespace settings (trim_blocks, lstrip_blocks, - markers)") {
  CHECK(render("{% if true %}\n  x\n{% endif %}\n") == "  x\n");
  CHECK(render("  {% if true %}y{% endif %}") == "y");
  CHECK(render("a  {{- 'b' -}}  c") == "abc");
  CHECK(render("a {#- c -#} b") == "ab");
  CHECK(render("text\n") == "text");  // one trailing newline is dropped
}

TEST_CASE("jinja: raise_exception keeps its message and names the position") {
  CHECK_THROWS_WITH(render("line one\n{{ raise_exception('Conversation roles must alternate') }}"),
                    Catch::Contains("chat template line 2, column 4: raise_exception: Conversation roles must alternate"));
}

TEST_CASE("jinja: syntax errors name the line and column and what is wrong") {
  auto error_of = [](std::string_view source) {
    try {
      render(source);
    } catch (const fedge::Error& e) {
      CHECK(e.kind() == fedge::ErrorKind::kInvalidInput);
      return std::string(e.what());
    }
    FAIL("no error for: " << source);
    return std::string();
  };
  CHECK_THAT(error_of("{% for m in messages %}x"), Catch::Contains("missing {% endfor %}"));
  CHECK_THAT(error_of("ab\n{{ x"), Catch::Contains("line 2, column 1: tag is not closed (missing }})"));
  CHECK_THAT(error_of("{# never closed"), Catch::Contains("comment is not closed"));
  CHECK_THAT(error_of("{{ 'open }}"), Catch::Contains("string is not closed"));
  CHECK_THAT(error_of("{% if %}{% endif %}"), Catch::Contains("expected a value"));
  CHECK_THAT(error_of("{% endfor %}"), Catch::Contains("unknown or unsupported tag 'endfor'"));
  CHECK_THAT(error_of("{{ x | nosuchfilter }}"), Catch::Contains("unknown filter 'nosuchfilter'"));
  CHECK_THAT(error_of("{{ x is nosuchtest }}"), Catch::Contains("unknown test 'nosuchtest'"));
  CHECK_THAT(error_of("{{ 1 + 'a' - 2 }}"), Catch::Contains("cannot apply -"));
  CHECK_THAT(error_of("{{ f() }}"), Catch::Contains("'f' is undefined, cannot call it"));
  CHECK_THAT(error_of("{{ 1 // 0 }}"), Catch::Contains("division by zero"));
  CHECK_THAT(error_of("{% set x.y = 1 %}"), Catch::Contains("only namespace() objects take attributes"));
  CHECK_THAT(error_of("{{ '\\q' }}"), Catch::Contains("unknown escape"));
  CHECK_THAT(error_of("{{ 99999999999999999999 }}"), Catch::Contains("too large"));
  CHECK_THAT(error_of("{{ @ }}"), Catch::Contains("unexpected character '@'"));
}

TEST_CASE("jinja: hostile templates stop at the limits with an error, never a crash") {
  Limits small;
  small.max_steps = 200'000;
  small.max_output_bytes = 1 << 16;
  auto fails_with = [&](const std::string& source, const char* what) {
    INFO(source.substr(0, 120));
    CHECK_THROWS_WITH(render(source, Json::object(), small), Catch::Contains(what));
  };
  fails_with("{% for i in range(100000000) %}x{% endfor %}", "over the limit");
  fails_with("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", "steps");
  fails_with("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
             "chat template line 1, column");
  fails_with("{{ 'x' * 100000000 }}", "over the limit");
  fails_with("{% for i in range(200000) %}{{ 'text' }}{% endfor %}", "");
  fails_with("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "macros call each other more than 32 deep");
  fails_with("{% set ns = namespace(l=[]) %}{% for i in range(100) %}{% set ns.l = [ns.l] %}{% endfor %}",
             "nested more than 64 deep");
  fails_with("{% set ns = namespace() %}{% set ns.self = ns %}", "namespace cannot be stored");
  fails_with("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}", "nested");
  fails_with("{{ " + std::string(20000, '-') + "1 }}", "nested");
  std::string nots = "{{ ";
  for (int i = 0; i < 5000; ++i) nots += "not ";
  fails_with(nots + "1 }}", "nested");
  std::string chain = "{{ x";
  for (int i = 0; i < 5000; ++i) chain += ".a";
  fails_with(chain + " }}", "nested more than");
  std::string adds = "{{ 1";
  for (int i = 0; i < 5000; ++i) adds += " + 1";
  fails_with(adds + " }}", "nested more than");
  std::string blocks;
  for (int i = 0; i < 5000; ++i) blocks += "{% if true %}";
  fails_with(blocks, "blocks are nested more than 64 deep");
  fails_with(std::string(2 << 20, 'x'), "over the limit of");  // template size
  Json deep = Json::array();
  for (int i = 0; i < 200; ++i) deep = Json::array({deep});
  CHECK_THROWS_WITH(render("{{ v }}", {{"v", deep}}), Catch::Contains("variable 'v' is nested more than 64 deep"));
}
