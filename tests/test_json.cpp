// The strict JSON reader behind safetensors headers: what it accepts, what it
// refuses, and that quote() writes what parse() reads back.
#include <doctest/doctest.h>

#include <string>

#include "nn/error.h"
#include "nn/json.h"

using namespace covidrate;
using json::Value;

TEST_CASE("well-formed documents parse") {
  const Value v = json::parse(R"( {"a": [1, -2.5e3, 0], "b": {"c": true, "d": null}, "e": "x\"\\\/\n\u00e9\ud83d\ude00"} )");
  REQUIRE(v.kind == Value::Kind::Object);
  REQUIRE(v.members.size() == 3);
  CHECK(v.members[0].first == "a");  // file order kept
  const Value* a = v.find("a");
  REQUIRE(a);
  REQUIRE(a->items.size() == 3);
  CHECK(a->items[1].kind == Value::Kind::Number);
  CHECK(a->items[1].text == "-2.5e3");  // numbers keep their text
  CHECK(v.find("b")->find("c")->boolean);
  CHECK(v.find("b")->find("d")->kind == Value::Kind::Null);
  CHECK(v.find("e")->text == "x\"\\/\n\xc3\xa9\xf0\x9f\x98\x80");  // surrogate pair joined into UTF-8
  CHECK(v.find("missing") == nullptr);
  CHECK(json::parse("[]").items.empty());
  CHECK(json::parse("{}").members.empty());
}

TEST_CASE("malformed documents are refused with the offset") {
  const char* bad[] = {
      "",                      // nothing
      "{",                     // unterminated
      "{\"a\":1,}",            // trailing comma
      "[1,]",                  // trailing comma
      "{'a':1}",               // single quotes
      "{\"a\":01}",            // leading zero
      "{\"a\":1.}",            // fraction without digits
      "{\"a\":+1}",            // plus sign
      "{\"a\":NaN}",           // not JSON
      "{\"a\":1 // c\n}",      // comment
      "{\"a\":\"x\ny\"}",      // raw control character
      "{\"a\":\"\\x\"}",       // unknown escape
      "{\"a\":\"\\ud800\"}",   // lone high surrogate
      "{\"a\":\"\\udc00\"}",   // lone low surrogate
      "{\"a\":\"\xc3\"}",      // truncated UTF-8
      "{\"a\":\"\xc0\xaf\"}",  // overlong UTF-8
      "{\"a\":1,\"a\":2}",     // duplicate key
      "{\"a\":1} x",           // text after the value
      "tru",                   // truncated literal
  };
  for (const char* text : bad) {
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(json::parse(text), doctest::Contains("at byte"), Error);
  }
}

TEST_CASE("nesting is limited") {
  CHECK_NOTHROW(json::parse(std::string(64, '[') + std::string(64, ']')));
  CHECK_THROWS_WITH_AS(json::parse(std::string(100000, '[')), doctest::Contains("deeper than 64"), Error);
}

TEST_CASE("quote writes what parse reads") {
  const std::string nasty = "q\"b\\s/n\nr\rt\tc\x01\x1f \xc3\xa9";
  std::string doc = "[";
  doc += json::quote(nasty);
  doc += "]";
  const Value v = json::parse(doc);
  CHECK(v.items.at(0).text == nasty);
  CHECK(json::quote("\x01") == "\"\\u0001\"");
}
