//! A small evaluator for the subset of CEL that CRD `x-kubernetes-validations` rules
//! commonly use: literals (int, double, string, bool, null, lists), `self` / `oldSelf`,
//! field selection, indexing, `!`, unary `-`, `&&`, `||`, `? :`, comparisons, `in`,
//! `+ - * / %`, `has()`, `size()`, `timestamp()`, `int()`, `double()`, `string()`, the
//! string methods `startsWith`, `endsWith`, `contains`, `matches`, `lowerAscii`,
//! `upperAscii`, and the list macros `all`, `exists`, `exists_one`, `filter`, `map`.
//! A rule outside this subset does not parse and is skipped (not enforced).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Double(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
}

fn lex(src: &str) -> Option<Vec<Tok>> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    const OPS: [&str; 24] = [
        "||", "&&", "==", "!=", "<=", ">=", "<", ">", "!", "+", "-", "*", "/", "%", "(", ")", "[",
        "]", ",", ".", "?", ":", "{", "}",
    ];
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            if i < chars.len() && (chars[i] == 'u' || chars[i] == 'U') {
                i += 1;
            }
            if s.contains('.') {
                out.push(Tok::Double(s.parse().ok()?));
            } else {
                out.push(Tok::Int(s.parse().ok()?));
            }
        } else if c == '\'' || c == '"' {
            let q = c;
            i += 1;
            let mut s = String::new();
            while i < chars.len() && chars[i] != q {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                    s.push(match chars[i] {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                } else {
                    s.push(chars[i]);
                }
                i += 1;
            }
            if i >= chars.len() {
                return None;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = OPS.iter().find(|o| rest.starts_with(**o))?;
            i += op.len();
            out.push(Tok::Op(op));
        }
    }
    Some(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Lit(Value),
    Ident(String),
    Select(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Call(Option<Box<Expr>>, String, Vec<Expr>),
    List(Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(&'static str, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(o)) if *o == op)
    }
    fn eat(&mut self, op: &str) -> Option<()> {
        if self.is_op(op) {
            self.pos += 1;
            Some(())
        } else {
            None
        }
    }
    fn expr(&mut self) -> Option<Expr> {
        let c = self.or()?;
        if self.eat("?").is_some() {
            let a = self.expr()?;
            self.eat(":")?;
            let b = self.expr()?;
            return Some(Expr::Cond(Box::new(c), Box::new(a), Box::new(b)));
        }
        Some(c)
    }
    fn or(&mut self) -> Option<Expr> {
        let mut l = self.and()?;
        while self.eat("||").is_some() {
            l = Expr::Bin("||", Box::new(l), Box::new(self.and()?));
        }
        Some(l)
    }
    fn and(&mut self) -> Option<Expr> {
        let mut l = self.rel()?;
        while self.eat("&&").is_some() {
            l = Expr::Bin("&&", Box::new(l), Box::new(self.rel()?));
        }
        Some(l)
    }
    fn rel(&mut self) -> Option<Expr> {
        let l = self.add()?;
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if self.eat(op).is_some() {
                return Some(Expr::Bin(op, Box::new(l), Box::new(self.add()?)));
            }
        }
        if matches!(self.peek(), Some(Tok::Ident(s)) if s == "in") {
            self.pos += 1;
            return Some(Expr::Bin("in", Box::new(l), Box::new(self.add()?)));
        }
        Some(l)
    }
    fn add(&mut self) -> Option<Expr> {
        let mut l = self.mul()?;
        loop {
            if self.eat("+").is_some() {
                l = Expr::Bin("+", Box::new(l), Box::new(self.mul()?));
            } else if self.eat("-").is_some() {
                l = Expr::Bin("-", Box::new(l), Box::new(self.mul()?));
            } else {
                return Some(l);
            }
        }
    }
    fn mul(&mut self) -> Option<Expr> {
        let mut l = self.unary()?;
        loop {
            let op = ["*", "/", "%"].into_iter().find(|o| self.is_op(o));
            match op {
                Some(op) => {
                    self.pos += 1;
                    l = Expr::Bin(op, Box::new(l), Box::new(self.unary()?));
                }
                None => return Some(l),
            }
        }
    }
    fn unary(&mut self) -> Option<Expr> {
        if self.eat("!").is_some() {
            return Some(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("-").is_some() {
            return Some(Expr::Neg(Box::new(self.unary()?)));
        }
        self.postfix()
    }
    fn args(&mut self) -> Option<Vec<Expr>> {
        let mut args = Vec::new();
        if self.eat(")").is_some() {
            return Some(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(")").is_some() {
                return Some(args);
            }
            self.eat(",")?;
        }
    }
    fn postfix(&mut self) -> Option<Expr> {
        let mut e = self.primary()?;
        loop {
            if self.eat(".").is_some() {
                let Some(Tok::Ident(name)) = self.peek().cloned() else {
                    return None;
                };
                self.pos += 1;
                if self.eat("(").is_some() {
                    e = Expr::Call(Some(Box::new(e)), name, self.args()?);
                } else {
                    e = Expr::Select(Box::new(e), name);
                }
            } else if self.eat("[").is_some() {
                let idx = self.expr()?;
                self.eat("]")?;
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else {
                return Some(e);
            }
        }
    }
    fn primary(&mut self) -> Option<Expr> {
        let t = self.peek()?.clone();
        self.pos += 1;
        match t {
            Tok::Int(i) => Some(Expr::Lit(Value::from(i))),
            Tok::Double(d) => Some(Expr::Lit(Value::from(d))),
            Tok::Str(s) => Some(Expr::Lit(Value::String(s))),
            Tok::Ident(id) => match id.as_str() {
                "true" => Some(Expr::Lit(Value::Bool(true))),
                "false" => Some(Expr::Lit(Value::Bool(false))),
                "null" => Some(Expr::Lit(Value::Null)),
                _ if self.eat("(").is_some() => Some(Expr::Call(None, id, self.args()?)),
                _ => Some(Expr::Ident(id)),
            },
            Tok::Op("(") => {
                let e = self.expr()?;
                self.eat(")")?;
                Some(e)
            }
            Tok::Op("[") => {
                let mut items = Vec::new();
                if self.eat("]").is_some() {
                    return Some(Expr::List(items));
                }
                loop {
                    items.push(self.expr()?);
                    if self.eat("]").is_some() {
                        return Some(Expr::List(items));
                    }
                    self.eat(",")?;
                }
            }
            _ => None,
        }
    }
}

/// A parsed rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Program(Expr);

/// Runtime values: JSON plus timestamps (nanoseconds since the epoch).
#[derive(Debug, Clone, PartialEq)]
enum V {
    J(Value),
    Ts(i128),
}

type R = Result<V, String>;

fn b(v: bool) -> V {
    V::J(Value::Bool(v))
}

fn as_bool(v: &V) -> Result<bool, String> {
    match v {
        V::J(Value::Bool(x)) => Ok(*x),
        other => Err(format!("no such overload: expected bool, got {other:?}")),
    }
}

fn as_num(v: &V) -> Option<f64> {
    match v {
        V::J(Value::Number(n)) => n.as_f64(),
        _ => None,
    }
}

fn is_int(v: &V) -> bool {
    matches!(v, V::J(Value::Number(n)) if n.is_i64() || n.is_u64())
}

fn eq(a: &V, c: &V) -> bool {
    match (as_num(a), as_num(c)) {
        (Some(x), Some(y)) => x == y,
        _ => a == c,
    }
}

fn cmp(a: &V, c: &V) -> Result<std::cmp::Ordering, String> {
    match (a, c) {
        (V::Ts(x), V::Ts(y)) => Ok(x.cmp(y)),
        (V::J(Value::String(x)), V::J(Value::String(y))) => Ok(x.cmp(y)),
        _ => match (as_num(a), as_num(c)) {
            (Some(x), Some(y)) => x
                .partial_cmp(&y)
                .ok_or_else(|| "NaN comparison".to_string()),
            _ => Err("no such overload for comparison".into()),
        },
    }
}

struct Env<'a> {
    vars: Vec<(String, V)>,
    this: &'a Value,
    old: Option<&'a Value>,
}

impl Env<'_> {
    fn lookup(&self, name: &str) -> R {
        if let Some((_, v)) = self.vars.iter().rev().find(|(n, _)| n == name) {
            return Ok(v.clone());
        }
        match name {
            "self" => Ok(V::J(self.this.clone())),
            "oldSelf" => self
                .old
                .map(|o| V::J(o.clone()))
                .ok_or_else(|| "oldSelf is not available".into()),
            other => Err(format!("undeclared reference to '{other}'")),
        }
    }

    fn eval(&mut self, e: &Expr) -> R {
        match e {
            Expr::Lit(v) => Ok(V::J(v.clone())),
            Expr::Ident(n) => self.lookup(n),
            Expr::List(items) => {
                let mut out = Vec::new();
                for i in items {
                    match self.eval(i)? {
                        V::J(v) => out.push(v),
                        V::Ts(_) => {
                            return Err("timestamps in list literals are not supported".into());
                        }
                    }
                }
                Ok(V::J(Value::Array(out)))
            }
            Expr::Select(obj, field) => match self.eval(obj)? {
                V::J(Value::Object(m)) => m
                    .get(field)
                    .cloned()
                    .map(V::J)
                    .ok_or_else(|| format!("no such key: {field}")),
                _ => Err(format!("no such key: {field}")),
            },
            Expr::Index(obj, idx) => {
                let o = self.eval(obj)?;
                let i = self.eval(idx)?;
                match (o, i) {
                    (V::J(Value::Array(a)), V::J(Value::Number(n))) => n
                        .as_u64()
                        .and_then(|n| a.get(n as usize).cloned())
                        .map(V::J)
                        .ok_or_else(|| "index out of range".into()),
                    (V::J(Value::Object(m)), V::J(Value::String(k))) => m
                        .get(&k)
                        .cloned()
                        .map(V::J)
                        .ok_or_else(|| format!("no such key: {k}")),
                    _ => Err("no such overload for index".into()),
                }
            }
            Expr::Not(x) => Ok(b(!as_bool(&self.eval(x)?)?)),
            Expr::Neg(x) => {
                let v = self.eval(x)?;
                if is_int(&v) {
                    let n = as_num(&v).unwrap_or(0.0) as i64;
                    Ok(V::J(Value::from(-n)))
                } else {
                    as_num(&v)
                        .map(|n| V::J(Value::from(-n)))
                        .ok_or_else(|| "no such overload for -".into())
                }
            }
            Expr::Cond(c, a, d) => {
                if as_bool(&self.eval(c)?)? {
                    self.eval(a)
                } else {
                    self.eval(d)
                }
            }
            Expr::Bin(op, l, r) => self.bin(op, l, r),
            Expr::Call(target, name, args) => self.call(target.as_deref(), name, args),
        }
    }

    fn bin(&mut self, op: &str, l: &Expr, r: &Expr) -> R {
        match op {
            "&&" => {
                let lv = self.eval(l).and_then(|v| as_bool(&v));
                if lv == Ok(false) {
                    return Ok(b(false));
                }
                let rv = as_bool(&self.eval(r)?)?;
                Ok(b(lv? && rv))
            }
            "||" => {
                let lv = self.eval(l).and_then(|v| as_bool(&v));
                if lv == Ok(true) {
                    return Ok(b(true));
                }
                let rv = as_bool(&self.eval(r)?)?;
                Ok(b(lv? || rv))
            }
            _ => {
                let a = self.eval(l)?;
                let c = self.eval(r)?;
                match op {
                    "==" => Ok(b(eq(&a, &c))),
                    "!=" => Ok(b(!eq(&a, &c))),
                    "<" => Ok(b(cmp(&a, &c)?.is_lt())),
                    "<=" => Ok(b(cmp(&a, &c)?.is_le())),
                    ">" => Ok(b(cmp(&a, &c)?.is_gt())),
                    ">=" => Ok(b(cmp(&a, &c)?.is_ge())),
                    "in" => match c {
                        V::J(Value::Array(items)) => {
                            Ok(b(items.into_iter().any(|i| eq(&V::J(i), &a))))
                        }
                        V::J(Value::Object(m)) => match a {
                            V::J(Value::String(k)) => Ok(b(m.contains_key(&k))),
                            _ => Err("no such overload for in".into()),
                        },
                        _ => Err("no such overload for in".into()),
                    },
                    "+" => match (a, c) {
                        (V::J(Value::String(x)), V::J(Value::String(y))) => {
                            Ok(V::J(Value::String(x + &y)))
                        }
                        (V::J(Value::Array(mut x)), V::J(Value::Array(y))) => {
                            x.extend(y);
                            Ok(V::J(Value::Array(x)))
                        }
                        (x, y) => arith(&x, &y, op),
                    },
                    _ => arith(&a, &c, op),
                }
            }
        }
    }

    fn call(&mut self, target: Option<&Expr>, name: &str, args: &[Expr]) -> R {
        if name == "has" && target.is_none() {
            let [Expr::Select(obj, field)] = args else {
                return Err("has() needs a field selection".into());
            };
            return match self.eval(obj)? {
                V::J(Value::Object(m)) => Ok(b(m.contains_key(field))),
                _ => Ok(b(false)),
            };
        }
        if let (
            Some(t),
            "all" | "exists" | "exists_one" | "filter" | "map",
            [Expr::Ident(var), body],
        ) = (target, name, args)
        {
            let items: Vec<Value> = match self.eval(t)? {
                V::J(Value::Array(a)) => a,
                V::J(Value::Object(m)) => m.keys().map(|k| Value::String(k.clone())).collect(),
                _ => return Err(format!("{name}() needs a list or map")),
            };
            let mut results = Vec::new();
            for item in items {
                self.vars.push((var.clone(), V::J(item.clone())));
                let r = self.eval(body);
                self.vars.pop();
                results.push((item, r?));
            }
            return match name {
                "all" => Ok(b(results
                    .iter()
                    .map(|(_, r)| as_bool(r))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .all(|x| x))),
                "exists" => Ok(b(results
                    .iter()
                    .map(|(_, r)| as_bool(r))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .any(|x| x))),
                "exists_one" => Ok(b(results
                    .iter()
                    .map(|(_, r)| as_bool(r))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .filter(|x| *x)
                    .count()
                    == 1)),
                "filter" => {
                    let mut out = Vec::new();
                    for (item, r) in results {
                        if as_bool(&r)? {
                            out.push(item);
                        }
                    }
                    Ok(V::J(Value::Array(out)))
                }
                _ => {
                    let mut out = Vec::new();
                    for (_, r) in results {
                        match r {
                            V::J(v) => out.push(v),
                            V::Ts(_) => return Err("map() to timestamps is not supported".into()),
                        }
                    }
                    Ok(V::J(Value::Array(out)))
                }
            };
        }
        let mut vals = Vec::new();
        if let Some(t) = target {
            vals.push(self.eval(t)?);
        }
        for a in args {
            vals.push(self.eval(a)?);
        }
        let s = |v: &V| match v {
            V::J(Value::String(s)) => Ok(s.clone()),
            _ => Err(format!("no such overload for {name}")),
        };
        match (name, vals.as_slice()) {
            ("size", [v]) => match v {
                V::J(Value::String(x)) => Ok(V::J(Value::from(x.chars().count() as i64))),
                V::J(Value::Array(x)) => Ok(V::J(Value::from(x.len() as i64))),
                V::J(Value::Object(x)) => Ok(V::J(Value::from(x.len() as i64))),
                _ => Err("no such overload for size".into()),
            },
            ("startsWith", [a, c]) => Ok(b(s(a)?.starts_with(&s(c)?))),
            ("endsWith", [a, c]) => Ok(b(s(a)?.ends_with(&s(c)?))),
            ("contains", [a, c]) => Ok(b(s(a)?.contains(&s(c)?))),
            ("matches", [a, c]) => {
                let re = regex::Regex::new(&s(c)?).map_err(|e| e.to_string())?;
                Ok(b(re.is_match(&s(a)?)))
            }
            ("lowerAscii", [a]) => Ok(V::J(Value::String(s(a)?.to_ascii_lowercase()))),
            ("upperAscii", [a]) => Ok(V::J(Value::String(s(a)?.to_ascii_uppercase()))),
            ("timestamp", [a]) => {
                let t = chrono::DateTime::parse_from_rfc3339(&s(a)?)
                    .map_err(|e| format!("timestamp: {e}"))?;
                Ok(V::Ts(
                    t.timestamp() as i128 * 1_000_000_000 + t.timestamp_subsec_nanos() as i128,
                ))
            }
            ("int", [a]) => match a {
                V::J(Value::String(x)) => x
                    .parse::<i64>()
                    .map(|n| V::J(Value::from(n)))
                    .map_err(|e| e.to_string()),
                V::Ts(t) => Ok(V::J(Value::from((t / 1_000_000_000) as i64))),
                other => as_num(other)
                    .map(|n| V::J(Value::from(n as i64)))
                    .ok_or_else(|| "no such overload for int".into()),
            },
            ("double", [a]) => match a {
                V::J(Value::String(x)) => x
                    .parse::<f64>()
                    .map(|n| V::J(Value::from(n)))
                    .map_err(|e| e.to_string()),
                other => as_num(other)
                    .map(|n| V::J(Value::from(n)))
                    .ok_or_else(|| "no such overload for double".into()),
            },
            ("string", [a]) => match a {
                V::J(Value::String(x)) => Ok(V::J(Value::String(x.clone()))),
                V::J(other) => Ok(V::J(Value::String(other.to_string()))),
                V::Ts(_) => Err("string(timestamp) is not supported".into()),
            },
            _ => Err(format!("unsupported function {name}")),
        }
    }
}

fn arith(a: &V, c: &V, op: &str) -> R {
    let (Some(x), Some(y)) = (as_num(a), as_num(c)) else {
        return Err(format!("no such overload for {op}"));
    };
    if is_int(a) && is_int(c) {
        let (x, y) = (x as i64, y as i64);
        let r = match op {
            "+" => x.checked_add(y),
            "-" => x.checked_sub(y),
            "*" => x.checked_mul(y),
            "/" => x.checked_div(y),
            "%" => x.checked_rem(y),
            _ => None,
        };
        return r
            .map(|n| V::J(Value::from(n)))
            .ok_or_else(|| format!("integer overflow or division by zero in {op}"));
    }
    let r = match op {
        "+" => x + y,
        "-" => x - y,
        "*" => x * y,
        "/" => x / y,
        _ => return Err(format!("no such overload for {op}")),
    };
    Ok(V::J(Value::from(r)))
}

fn mentions_old(e: &Expr) -> bool {
    match e {
        Expr::Ident(n) => n == "oldSelf",
        Expr::Lit(_) => false,
        Expr::Select(x, _) | Expr::Not(x) | Expr::Neg(x) => mentions_old(x),
        Expr::Index(a, c) | Expr::Bin(_, a, c) => mentions_old(a) || mentions_old(c),
        Expr::Cond(a, c, d) => mentions_old(a) || mentions_old(c) || mentions_old(d),
        Expr::List(items) => items.iter().any(mentions_old),
        Expr::Call(t, _, args) => {
            t.as_deref().is_some_and(mentions_old) || args.iter().any(mentions_old)
        }
    }
}

impl Program {
    /// Parses a rule; `None` when it is outside the supported subset.
    pub fn parse(src: &str) -> Option<Program> {
        let toks = lex(src)?;
        let mut p = Parser { toks, pos: 0 };
        let e = p.expr()?;
        (p.pos == p.toks.len()).then_some(Program(e))
    }

    /// Whether the rule is a transition rule (references `oldSelf`).
    pub fn uses_old_self(&self) -> bool {
        mentions_old(&self.0)
    }

    /// Evaluates the rule with `self` and `oldSelf` bound.
    pub fn eval(&self, this: &Value, old: Option<&Value>) -> Result<bool, String> {
        let mut env = Env {
            vars: Vec::new(),
            this,
            old,
        };
        as_bool(&env.eval(&self.0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(rule: &str, this: Value) -> bool {
        Program::parse(rule)
            .expect(rule)
            .eval(&this, None)
            .expect(rule)
    }

    #[test]
    fn rules_of_the_exportjob_crd() {
        assert!(run("size(self) >= 3", json!("abc")));
        assert!(!run("size(self) >= 3", json!("ab")));
        assert!(run(
            "self.startsWith('/') || self.startsWith('.')",
            json!("/data")
        ));
        assert!(!run(
            "self.startsWith('/') || self.startsWith('.')",
            json!("data")
        ));
        assert!(run("has(self.s3) != has(self.volume)", json!({"s3": {}})));
        assert!(!run(
            "has(self.s3) != has(self.volume)",
            json!({"s3": {}, "volume": {}})
        ));
        assert!(run("self >= 1 && self <= 100", json!(5)));
        assert!(!run("self >= 1 && self <= 100", json!(0)));
        let r = "[has(self.basic), has(self.apiKey), has(self.awsSigV4)].filter(x, x).size() <= 1";
        assert!(run(r, json!({"basic": {}})));
        assert!(!run(r, json!({"basic": {}, "apiKey": {}})));
        let t = "timestamp(self.gte) < timestamp(self.lt)";
        assert!(run(
            t,
            json!({"gte": "2024-01-01T00:00:00Z", "lt": "2024-01-02T00:00:00Z"})
        ));
        assert!(!run(
            t,
            json!({"gte": "2024-01-02T00:00:00Z", "lt": "2024-01-01T00:00:00Z"})
        ));
        let p = Program::parse("(has(self.source) == has(oldSelf.source)) && (!has(self.source) || self.source == oldSelf.source)").unwrap();
        assert!(p.uses_old_self());
        assert!(
            p.eval(
                &json!({"source": {"a": 1}}),
                Some(&json!({"source": {"a": 1}}))
            )
            .unwrap()
        );
        assert!(
            !p.eval(
                &json!({"source": {"a": 2}}),
                Some(&json!({"source": {"a": 1}}))
            )
            .unwrap()
        );
        assert!(Program::parse("self.x.y(").is_none());
        assert!(run("self.all(k, k in ['a', 'b'])", json!({"a": 1})));
        assert!(run("self.x > 1 ? true : false", json!({"x": 2})));
    }
}
