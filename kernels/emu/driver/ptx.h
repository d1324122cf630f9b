// ptx.h -- what the emulated driver reads from a PTX module: the ISA version, the target, and for each kernel
// (.entry) its parameter list (sizes, alignments, float or not), its launch bounds (.maxntid, .reqntid) and its static
// shared memory (.shared arrays declared in its body or at module scope and named in its body). The instructions are
// not read: the emulator runs the kernel of the same name compiled from kernels/*.cu.
#pragma once

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace ptx {

struct Param {
  int size = 0;   // bytes
  int align = 0;  // bytes
  bool is_float = false;
  std::string type;  // ".u64", ".f32", ... (".b8" with an array size for aggregates)
};

struct Entry {
  std::string name;
  std::vector<Param> params;
  long maxntid = 0;           // product of .maxntid's dimensions; 0 without one
  long reqntid[3] = {0, 0, 0};  // .reqntid's dimensions; all 0 without one
  size_t static_shared = 0;   // bytes of .shared arrays this kernel uses
  size_t param_bytes = 0;     // size of the parameter buffer (each parameter at its alignment)
};

struct Module {
  int version_major = 0, version_minor = 0;  // .version
  int target_sm = 0;                          // .target sm_XX -> XX
  std::vector<Entry> entries;

  const Entry* find(const char* name) const {
    for (const Entry& e : entries)
      if (e.name == name) return &e;
    return nullptr;
  }
};

namespace detail {

// strip_comments removes // and /* */ comments (PTX has no string literals that could contain them).
inline std::string strip_comments(const char* src) {
  std::string out;
  for (const char* p = src; *p;) {
    if (p[0] == '/' && p[1] == '/') {
      while (*p && *p != '\n') p++;
    } else if (p[0] == '/' && p[1] == '*') {
      p += 2;
      while (*p && !(p[0] == '*' && p[1] == '/')) p++;
      if (*p) p += 2;
      out += ' ';
    } else {
      out += *p++;
    }
  }
  return out;
}

inline bool ident_char(char c) { return std::isalnum((unsigned char)c) || c == '_' || c == '$' || c == '.' || c == '%'; }

// type_size gives the byte size of a PTX fundamental type (.u32, .f64, .b8, .pred, ...); 0 if unknown.
inline int type_size(const std::string& t) {
  if (t == ".pred") return 1;
  if (t.size() < 3) return 0;
  const char k = t[1];
  if (k != 'u' && k != 's' && k != 'b' && k != 'f') return 0;
  if (t == ".f16x2" || t == ".bf16x2") return 4;
  if (t == ".bf16") return 2;
  const int bits = std::atoi(t.c_str() + 2);
  if (bits != 8 && bits != 16 && bits != 32 && bits != 64) return 0;
  if (k == 'f' && bits == 8) return 0;
  return bits / 8;
}

// Tokens of a declaration: words (".param", ".u64", "name"), numbers, and single punctuation characters.
inline std::vector<std::string> tokens(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    char c = s[i];
    if (std::isspace((unsigned char)c)) {
      i++;
    } else if (ident_char(c)) {
      size_t j = i;
      while (j < s.size() && ident_char(s[j])) j++;
      out.push_back(s.substr(i, j - i));
      i = j;
    } else {
      out.push_back(std::string(1, c));
      i++;
    }
  }
  return out;
}

// Parsed variable or parameter declaration: [.align N] .type [.ptr ...] NAME [ [N] ... ]
struct Decl {
  int align = 0;
  std::string type;
  std::string name;
  long count = 1;  // product of the array dimensions; -1 for an unsized array ([])
  bool ok = false;
};

inline Decl parse_decl(const std::vector<std::string>& t, size_t i) {
  Decl d;
  for (; i < t.size(); i++) {
    const std::string& w = t[i];
    if (w == ".align" && i + 1 < t.size()) {
      const int a = std::atoi(t[++i].c_str());
      if (d.type.empty()) d.align = a;  // after the type (".ptr .align N") it is the pointee's alignment
    } else if (w == ".ptr" || w == ".global" || w == ".shared" || w == ".const" || w == ".local" || w == ".v2" ||
               w == ".v4" || w == ".extern" || w == ".visible" || w == ".weak") {
      if (w == ".v2" || w == ".v4") d.count *= (w == ".v2" ? 2 : 4);
    } else if (w[0] == '.' && d.type.empty()) {
      d.type = w;
    } else if (w[0] != '.' && w != "[" && w != "]" && w != "," && d.name.empty() && !d.type.empty()) {
      d.name = w;
    } else if (w == "[" && !d.name.empty()) {
      if (i + 1 < t.size() && t[i + 1] == "]") {
        d.count = -1;
        i++;
      } else if (i + 2 < t.size() && t[i + 2] == "]") {
        d.count *= std::atol(t[i + 1].c_str());
        i += 2;
      } else {
        return d;
      }
    } else if (w == "=" || w == ";") {
      break;
    }
  }
  d.ok = !d.type.empty() && !d.name.empty() && type_size(d.type) > 0;
  return d;
}

// skip_balanced returns the index just past the bracket that closes s[i] (one of ( { [).
inline size_t skip_balanced(const std::string& s, size_t i) {
  const char open = s[i], close = open == '(' ? ')' : open == '{' ? '}' : ']';
  int depth = 0;
  for (; i < s.size(); i++) {
    if (s[i] == open) depth++;
    if (s[i] == close && --depth == 0) return i + 1;
  }
  return std::string::npos;
}

inline bool uses_name(const std::string& body, const std::string& name) {
  for (size_t p = body.find(name); p != std::string::npos; p = body.find(name, p + 1)) {
    const bool before = p > 0 && ident_char(body[p - 1]);
    const bool after = p + name.size() < body.size() && ident_char(body[p + name.size()]);
    if (!before && !after) return true;
  }
  return false;
}

}  // namespace detail

// parse reads a PTX module. Returns false with a message in err for text it cannot read.
inline bool parse(const char* text, Module* m, std::string* err) {
  using namespace detail;
  const std::string s = strip_comments(text);
  std::map<std::string, size_t> module_shared;  // module-scope .shared arrays: name -> bytes
  struct Body {
    size_t entry;
    std::string text;
  };
  std::vector<Body> bodies;
  bool have_version = false, have_target = false;

  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace((unsigned char)s[i])) i++;
    if (i >= s.size()) break;
    if (s[i] == '{') {  // a stray top-level block
      size_t j = skip_balanced(s, i);
      if (j == std::string::npos) {
        *err = "unbalanced { at top level";
        return false;
      }
      i = j;
      continue;
    }
    // The statement's head: up to ';', '(' or '{' (whichever comes first).
    size_t j = i;
    while (j < s.size() && s[j] != ';' && s[j] != '(' && s[j] != '{') j++;
    const std::vector<std::string> head = tokens(s.substr(i, j - i));
    bool is_entry = false, is_func = false;
    for (const std::string& w : head) {
      if (w == ".entry") is_entry = true;
      if (w == ".func") is_func = true;
    }
    if (head.empty()) {
      i = j + 1;
      continue;
    }
    if (head[0] == ".version" && head.size() >= 2) {
      const std::string& v = head[1];
      const size_t dot = v.find('.');
      m->version_major = std::atoi(v.c_str());
      m->version_minor = dot == std::string::npos ? 0 : std::atoi(v.c_str() + dot + 1);
      have_version = true;
      i = s.find('\n', i);
      continue;
    }
    if (head[0] == ".target" && head.size() >= 2) {
      const std::string& t = head[1];
      if (t.compare(0, 3, "sm_") != 0 || !std::isdigit((unsigned char)t[3])) {
        *err = "unknown .target " + t;
        return false;
      }
      m->target_sm = std::atoi(t.c_str() + 3);
      have_target = true;
      i = s.find('\n', i);
      continue;
    }
    if (head[0] == ".address_size") {
      if (head.size() < 2 || head[1] != "64") {
        *err = "only .address_size 64 is supported";
        return false;
      }
      i = s.find('\n', i);
      continue;
    }
    if (is_entry || is_func) {
      // [.visible|.weak|.extern] .entry NAME ( params ) directives { body }   or the same ending in ';'
      std::string name;
      for (size_t k = 0; k + 1 < head.size(); k++)
        if (head[k] == ".entry" || head[k] == ".func") name = head[k + 1];
      size_t k = j;
      std::string params;
      bool is_decl = false;
      if (is_func) {
        // .func (.param .b32 retval) NAME (.param ...) : the return list, then the name, then the parameters.
        while (k < s.size() && s[k] == '(') {
          const size_t e = skip_balanced(s, k);
          if (e == std::string::npos) break;
          k = e;
          while (k < s.size() && s[k] != '(' && s[k] != '{' && s[k] != ';') k++;
        }
      } else if (k < s.size() && s[k] == '(') {
        const size_t e = skip_balanced(s, k);
        if (e == std::string::npos) {
          *err = "unbalanced ( in the parameters of " + name;
          return false;
        }
        params = s.substr(k + 1, e - k - 2);
        k = e;
      }
      // Performance directives up to the body (or ';' for a declaration).
      size_t b = k;
      while (b < s.size() && s[b] != '{' && s[b] != ';') b++;
      if (b >= s.size()) {
        *err = "no body for " + name;
        return false;
      }
      is_decl = s[b] == ';';
      const std::vector<std::string> perf = tokens(s.substr(k, b - k));
      size_t end = b + 1;
      if (!is_decl) {
        end = skip_balanced(s, b);
        if (end == std::string::npos) {
          *err = "unbalanced { in the body of " + name;
          return false;
        }
      }
      if (is_entry && !is_decl && !name.empty()) {
        Entry e;
        e.name = name;
        // parameters: comma-separated ".param ..." declarations
        size_t start = 0;
        int idx = 0;
        while (start < params.size()) {
          size_t comma = params.find(',', start);
          if (comma == std::string::npos) comma = params.size();
          const std::vector<std::string> pt = tokens(params.substr(start, comma - start));
          start = comma + 1;
          if (pt.empty()) continue;
          if (pt[0] != ".param") {
            *err = "parameter " + std::to_string(idx) + " of " + name + " is not a .param";
            return false;
          }
          Decl d = parse_decl(pt, 1);
          if (!d.ok || d.count < 1) {
            *err = "cannot read parameter " + std::to_string(idx) + " of " + name;
            return false;
          }
          Param p;
          p.type = d.type;
          p.size = type_size(d.type) * (int)d.count;
          p.align = d.align > 0 ? d.align : type_size(d.type);
          p.is_float = d.type[1] == 'f' || d.type.compare(0, 3, ".bf") == 0;
          e.params.push_back(p);
          e.param_bytes = (e.param_bytes + p.align - 1) / p.align * p.align + p.size;
          idx++;
        }
        for (size_t q = 0; q < perf.size(); q++) {
          if (perf[q] == ".maxntid" || perf[q] == ".reqntid") {
            long dims[3] = {1, 1, 1};
            int nd = 0;
            for (size_t r = q + 1; r < perf.size() && nd < 3; r++) {
              if (perf[r] == ",") continue;
              if (!std::isdigit((unsigned char)perf[r][0])) break;
              dims[nd++] = std::atol(perf[r].c_str());
            }
            if (perf[q] == ".maxntid") {
              e.maxntid = dims[0] * dims[1] * dims[2];
            } else {
              for (int r = 0; r < 3; r++) e.reqntid[r] = dims[r];
            }
          }
        }
        bodies.push_back(Body{m->entries.size(), s.substr(b, end - b)});
        m->entries.push_back(e);
      }
      i = end;
      continue;
    }
    // Any other top-level statement, up to its ';' (an initializer may hold braces).
    size_t e = i;
    int depth = 0;
    for (; e < s.size(); e++) {
      if (s[e] == '{' || s[e] == '(') depth++;
      if (s[e] == '}' || s[e] == ')') depth--;
      if (s[e] == ';' && depth == 0) break;
    }
    const std::vector<std::string> st = tokens(s.substr(i, e - i));
    bool shared = false, ext = false;
    for (const std::string& w : st) {
      if (w == ".shared") shared = true;
      if (w == ".extern") ext = true;
    }
    if (shared && !ext) {
      Decl d = parse_decl(st, 0);
      if (d.ok && d.count > 0) module_shared[d.name] = (size_t)type_size(d.type) * d.count;
    }
    i = e + 1;
  }
  if (!have_version) {
    *err = "no .version directive (not PTX text?)";
    return false;
  }
  if (!have_target) {
    *err = "no .target directive";
    return false;
  }
  // Static shared memory of each kernel: .shared arrays declared in its body, and module-scope ones it names.
  for (const Body& b : bodies) {
    size_t total = 0;
    size_t p = 0;
    while ((p = b.text.find(".shared", p)) != std::string::npos) {
      // a declaration starts a statement: only whitespace or '{' ';' before it on its line
      size_t q = p;
      while (q > 0 && (b.text[q - 1] == ' ' || b.text[q - 1] == '\t')) q--;
      const bool stmt = q == 0 || b.text[q - 1] == '\n' || b.text[q - 1] == '{' || b.text[q - 1] == ';';
      size_t e = b.text.find(';', p);
      if (e == std::string::npos) break;
      if (stmt) {
        const std::vector<std::string> st = tokens(b.text.substr(p, e - p));
        bool ext = false;
        for (const std::string& w : st) ext |= w == ".extern";
        Decl d = parse_decl(st, 0);
        if (d.ok && d.count > 0 && !ext) total += (size_t)type_size(d.type) * d.count;
      }
      p = e;
    }
    for (const auto& kv : module_shared)
      if (uses_name(b.text, kv.first)) total += kv.second;
    m->entries[b.entry].static_shared = total;
  }
  return true;
}

}  // namespace ptx
