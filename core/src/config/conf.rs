//! The syntax of nats-server configuration files, to a tree of values with
//! line numbers (no crate parses this format).
//!
//! Supported: `#` and `//` comments; `key: value`, `key = value`, `key value`;
//! maps `{ ... }` and arrays `[ ... ]` whose entries are separated by
//! newlines, commas or semicolons; double- and single-quoted strings with
//! the usual escapes; bare strings (`0.0.0.0:4222`, `nats://a:4248`);
//! integers with nats-server's size suffixes (`1MB` = 1,048,576, `1K` = 1,000);
//! floats; booleans (`true/false/yes/no/on/off`). Not supported, and rejected
//! with a clear error: `include` and `$VARIABLE` references (an unquoted
//! bcrypt hash such as `$2a$11$...` is read as a string, as nats-server does).

use thiserror::Error;

/// A configuration value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Value>),
    Map(Vec<Entry>),
}

/// One `key: value` entry of a map, with the line the key is on.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
}

fn is_bare_end(b: u8) -> bool {
    matches!(b, b'\n' | b'\r' | b',' | b';' | b']' | b'}' | b'#') || b == b' ' || b == b'\t'
}

impl<'a> Parser<'a> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            line: self.line,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    /// Skips spaces, tabs and comments; with `newlines`, line breaks too.
    fn skip(&mut self, newlines: bool) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'\n' if newlines => {
                    self.line += 1;
                    self.pos += 1;
                }
                b'#' => self.skip_comment(),
                b'/' if self.src.get(self.pos + 1) == Some(&b'/') => self.skip_comment(),
                _ => return,
            }
        }
    }

    fn skip_comment(&mut self) {
        while let Some(b) = self.peek() {
            if b == b'\n' {
                return;
            }
            self.pos += 1;
        }
    }

    /// Skips entry separators (newlines, commas, semicolons) and blanks.
    fn skip_separators(&mut self) {
        loop {
            self.skip(true);
            match self.peek() {
                Some(b',') | Some(b';') => self.pos += 1,
                _ => return,
            }
        }
    }

    fn parse_map_body(&mut self, closing: Option<u8>) -> Result<Vec<Entry>, SyntaxError> {
        let mut entries = Vec::new();
        loop {
            self.skip_separators();
            match self.peek() {
                None if closing.is_none() => return Ok(entries),
                None => return self.err("unexpected end of file: missing '}'"),
                Some(b) if Some(b) == closing => {
                    self.pos += 1;
                    return Ok(entries);
                }
                Some(_) => {}
            }
            let line = self.line;
            let key = self.parse_key()?;
            if key == "include" {
                return self.err("'include' is not supported");
            }
            self.skip(false);
            match self.peek() {
                Some(b':') | Some(b'=') => {
                    self.pos += 1;
                    self.skip(false);
                }
                _ => {}
            }
            let value = self.parse_value()?;
            entries.push(Entry { key, line, value });
        }
    }

    fn parse_key(&mut self) -> Result<String, SyntaxError> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => self.parse_quoted(q),
            _ => {
                let start = self.pos;
                while let Some(b) = self.peek() {
                    if b.is_ascii_whitespace() || matches!(b, b':' | b'=' | b'{' | b'[' | b'#') {
                        break;
                    }
                    self.pos += 1;
                }
                if self.pos == start {
                    return self.err(format!(
                        "expected a key, found {:?}",
                        self.peek().map(char::from)
                    ));
                }
                Ok(String::from_utf8_lossy(&self.src[start..self.pos]).into_owned())
            }
        }
    }

    fn parse_value(&mut self) -> Result<Value, SyntaxError> {
        match self.peek() {
            None => self.err("missing value"),
            Some(b'{') => {
                self.pos += 1;
                Ok(Value::Map(self.parse_map_body(Some(b'}'))?))
            }
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_separators();
                    match self.peek() {
                        None => return self.err("unexpected end of file: missing ']'"),
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Value::Array(items));
                        }
                        Some(_) => items.push(self.parse_value()?),
                    }
                }
            }
            Some(q @ (b'"' | b'\'')) => Ok(Value::String(self.parse_quoted(q)?)),
            Some(b'\n') | Some(b',') | Some(b';') | Some(b'}') | Some(b']') => {
                self.err("missing value")
            }
            Some(_) => self.parse_bare(),
        }
    }

    fn parse_quoted(&mut self, quote: u8) -> Result<String, SyntaxError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return self.err("unterminated string"),
                Some(b) if b == quote => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') if quote == b'"' => {
                    self.pos += 1;
                    let esc = self.peek().ok_or(SyntaxError {
                        line: self.line,
                        message: "unterminated string".into(),
                    })?;
                    out.push(match esc {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'\\' => b'\\',
                        b'"' => b'"',
                        other => {
                            return self.err(format!("unknown escape '\\{}'", char::from(other)))
                        }
                    });
                    self.pos += 1;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).or_else(|_| self.err("string is not UTF-8"))
    }

    fn parse_bare(&mut self) -> Result<Value, SyntaxError> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if is_bare_end(b) {
                break;
            }
            self.pos += 1;
        }
        let text = String::from_utf8_lossy(&self.src[start..self.pos]).into_owned();
        // An unquoted bcrypt hash (`$2a$...`) is a string, as in nats-server;
        // any other `$NAME` is a variable reference.
        if text.starts_with('$') && !text.starts_with("$2") {
            return self.err(format!("variables are not supported ({text})"));
        }
        Ok(classify(&text))
    }
}

/// Turns a bare token into a typed value, as nats-server's lexer does.
fn classify(text: &str) -> Value {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => return Value::Bool(true),
        "false" | "no" | "off" => return Value::Bool(false),
        _ => {}
    }
    let digits = text
        .bytes()
        .enumerate()
        .take_while(|&(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
        .count();
    if digits > 0 && text[..digits].bytes().any(|b| b.is_ascii_digit()) {
        if let Ok(n) = text[..digits].parse::<i64>() {
            let mult: Option<i64> = match text[digits..].to_ascii_lowercase().as_str() {
                "" => Some(1),
                "k" => Some(1000),
                "kb" | "ki" | "kib" => Some(1 << 10),
                "m" => Some(1000 * 1000),
                "mb" | "mi" | "mib" => Some(1 << 20),
                "g" => Some(1000 * 1000 * 1000),
                "gb" | "gi" | "gib" => Some(1 << 30),
                _ => None,
            };
            if let Some(m) = mult.and_then(|m| n.checked_mul(m)) {
                return Value::Int(m);
            }
        }
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::String(text.to_owned())
}

/// Parses a whole configuration file into its top-level entries.
pub fn parse(text: &str) -> Result<Vec<Entry>, SyntaxError> {
    let mut p = Parser {
        src: text.as_bytes(),
        pos: 0,
        line: 1,
    };
    p.parse_map_body(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(entries: &'a [Entry], key: &str) -> &'a Value {
        &entries.iter().find(|e| e.key == key).unwrap().value
    }

    #[test]
    fn the_nats_server_syntax() {
        let text = r#"
# a comment
listen: 127.0.0.1:4222
server_name = "n1"   // trailing comment
max_payload 2MB
ping_interval: "2m"
ping_max: 3, debug: true; trace: off
ratio: 0.5
authorization {
  users = [
    {user: alice, password: "a\"b"}
    {user: 'bob', password: $2a$11$abc}
  ]
  timeout: 1.5
}
cluster {
  routes [nats://a:4248, nats://b:4248]
}
"#;
        let e = parse(text).unwrap();
        assert_eq!(get(&e, "listen"), &Value::String("127.0.0.1:4222".into()));
        assert_eq!(get(&e, "server_name"), &Value::String("n1".into()));
        assert_eq!(get(&e, "max_payload"), &Value::Int(2 << 20));
        assert_eq!(get(&e, "ping_max"), &Value::Int(3));
        assert_eq!(get(&e, "debug"), &Value::Bool(true));
        assert_eq!(get(&e, "trace"), &Value::Bool(false));
        assert_eq!(get(&e, "ratio"), &Value::Float(0.5));
        let Value::Map(auth) = get(&e, "authorization") else {
            panic!()
        };
        let Value::Array(users) = get(auth, "users") else {
            panic!()
        };
        let Value::Map(alice) = &users[0] else {
            panic!()
        };
        assert_eq!(get(alice, "password"), &Value::String("a\"b".into()));
        let Value::Map(bob) = &users[1] else { panic!() };
        assert_eq!(get(bob, "user"), &Value::String("bob".into()));
        assert_eq!(get(bob, "password"), &Value::String("$2a$11$abc".into()));
        assert_eq!(get(auth, "timeout"), &Value::Float(1.5));
        let Value::Map(cluster) = get(&e, "cluster") else {
            panic!()
        };
        assert_eq!(
            get(cluster, "routes"),
            &Value::Array(vec![
                Value::String("nats://a:4248".into()),
                Value::String("nats://b:4248".into())
            ])
        );
        assert_eq!(e.iter().find(|x| x.key == "max_payload").unwrap().line, 5);
    }

    #[test]
    fn size_suffixes() {
        assert_eq!(classify("1K"), Value::Int(1000));
        assert_eq!(classify("1KB"), Value::Int(1024));
        assert_eq!(classify("64MB"), Value::Int(64 << 20));
        assert_eq!(classify("1G"), Value::Int(1_000_000_000));
        assert_eq!(classify("-1"), Value::Int(-1));
        assert_eq!(classify("10s"), Value::String("10s".into()));
        assert_eq!(classify("127.0.0.1"), Value::String("127.0.0.1".into()));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = parse("a: 1\nb: {\n c: 2\n").unwrap_err();
        assert!(e.message.contains("missing '}'"), "{e}");
        let e = parse("a: 1\nb: \"open\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("include other.conf\n").unwrap_err();
        assert!(e.message.contains("include"));
        let e = parse("a: $VAR\n").unwrap_err();
        assert!(e.message.contains("variables"));
    }
}
