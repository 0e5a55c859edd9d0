// The site page (serving/web/, built into the binary): served at / and /site
// with its script and style, under a Content-Security-Policy that allows this
// origin only, without a key even when the API wants one (the page asks for
// the key and its script sends it), while every API route still needs it.
// The page's behaviour in a browser: tests/browser/site_page.test.mjs.
#include "http_fixture.h"

#include "fedge/protocol/api_keys.h"
// After the fedge headers: ATen (through glog) defines CHECK too, and the
// test must use Catch's.
#include <catch2/catch.hpp>

using namespace fedge;
using namespace fedge::serving;

namespace {

const std::string kKey = "sk-fedge-site-page-test-0123456789abcdef0123";

HttpOptions keyed_options() {
  HttpOptions o;
  o.api_keys = std::make_shared<ApiKeys>(ApiKeys::parse(kKey + " site\n", "keys.txt"));
  return o;
}

}  // namespace

TEST_CASE("the site page, its script and style are served with a strict CSP and no key", "[http][site]") {
  testing_http::HttpFixture f(keyed_options());
  auto http = f.client();
  struct Expect {
    const char* path;
    const char* type;
    const char* contains;
  };
  for (const Expect& e : {Expect{"/", "text/html; charset=utf-8", "<script src=\"site.js\" defer></script>"},
                          Expect{"/site", "text/html; charset=utf-8", "id=\"csv-file\""},
                          Expect{"/site.js", "text/javascript; charset=utf-8", "v1/chat/completions"},
                          Expect{"/site.css", "text/css; charset=utf-8", "#charts"}}) {
    INFO(e.path);
    const auto res = http.Get(e.path);
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->get_header_value("Content-Type") == e.type);
    CHECK(res->body.find(e.contains) != std::string::npos);
    const std::string csp = res->get_header_value("Content-Security-Policy");
    CHECK(csp.find("default-src 'self'") != std::string::npos);
    CHECK(csp.find("script-src 'self'") != std::string::npos);
    CHECK(csp.find("connect-src 'self'") != std::string::npos);
    CHECK(csp.find("unsafe") == std::string::npos);
    CHECK(res->get_header_value("X-Content-Type-Options") == "nosniff");
    const auto head = http.Head(e.path);
    REQUIRE(head);
    CHECK(head->status == 200);
  }
  // The page holds no inline script (the CSP would block it) and loads
  // nothing from elsewhere.
  const std::string html = http.Get("/")->body;
  CHECK(html.find("<script>") == std::string::npos);
  CHECK(html.find("http://") == std::string::npos);
  CHECK(html.find("https://") == std::string::npos);
  // The served bytes are the files' bytes, multi-byte UTF-8 included.
  CHECK(http.Get("/site.js")->body.find("\xe2\x80\xa6") != std::string::npos);  // …
}

TEST_CASE("the site page opens no way around the API key", "[http][site][api-keys]") {
  testing_http::HttpFixture f(keyed_options());
  auto http = f.client();
  // The API itself still wants the key.
  for (const char* path : {"/v1/models", "/site/v1/models", "/site.js/../v1/models", "/sitex", "/site.jsx", "/site/"}) {
    INFO(path);
    const auto res = http.Get(path);
    REQUIRE(res);
    CHECK(res->status == 401);
  }
  // Only GET and HEAD of the page's own paths are open.
  for (const char* path : {"/", "/site", "/site.js"}) {
    INFO(path);
    const auto post = http.Post(path, "{}", "application/json");
    REQUIRE(post);
    CHECK(post->status == 401);
  }
  // With the key, a path the page does not have is a 404, not the page.
  const httplib::Headers good{{"Authorization", "Bearer " + kKey}};
  for (const char* path : {"/sitex", "/site.jsx", "/site/", "/index.html"}) {
    INFO(path);
    const auto res = http.Get(path, good);
    REQUIRE(res);
    CHECK(res->status == 404);
  }
}
