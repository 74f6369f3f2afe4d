// A small strict JSON reader and string quoting, enough for safetensors headers.
//
// Strict means RFC 8259 and nothing more: no comments, no trailing commas, no
// single quotes, no leading zeros, no control characters inside strings, no
// duplicate keys, valid \u escapes (surrogate pairs joined into UTF-8). A file
// header is untrusted input, so every deviation is an error, never a guess.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace covidrate::json {

struct Value {
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  // Number: its text exactly as written (callers decide what range they accept).
  // String: the decoded UTF-8 contents.
  std::string text;
  std::vector<Value> items;                            // Array
  std::vector<std::pair<std::string, Value>> members;  // Object, in file order

  // The member named key of an object, or null if there is none.
  const Value* find(std::string_view key) const;
};

const char* kind_name(Value::Kind kind);

// Parses one JSON value surrounded by optional whitespace. Throws
// covidrate::Error("JSON: <problem> at byte <offset>") on anything malformed.
// Nesting deeper than 64 levels is rejected (no stack exhaustion on hostile input).
Value parse(std::string_view text);

// A JSON string literal for s (quotes included), escaping what must be escaped.
std::string quote(std::string_view s);

}  // namespace covidrate::json
