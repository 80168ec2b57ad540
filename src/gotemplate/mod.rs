//! Go's `text/template`, as `docker --format` evaluates it, over JSON data.
//!
//! Main entry: [`render`]. Parsing is in [`parse`]; this module runs the tree: pipelines,
//! variables, `if`/`range`/`with`, Go's builtin functions (`and or not len index slice print
//! printf println eq ne lt le gt ge html js urlquery`) and Docker's (`json split join title
//! lower upper pad truncate`).
//!
//! Key design decision: the data is the JSON Docker's API would give (Go structs become
//! objects), so Go's printing of a value whose JSON is `null` or absent depends on its Go
//! type, which JSON lost: the field's name decides (`ExposedPorts` is a map and prints
//! `map[]`, `Cmd` a slice and prints `[]`, `Healthcheck` a pointer and prints `<nil>`); an
//! absent key of any other name prints `<no value>`, as a Go map's does.

mod funcs;
mod parse;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use funcs::{html_escape, js_escape, printf, title, url_escape};
use parse::{Node, Operand, Pipe};

/// Renders `template` with `data` as dot.
pub fn render(template: &str, data: &Value) -> Result<String> {
    let nodes = parse::parse(template)?;
    let mut ex = Exec {
        vars: vec![("$".to_string(), Val::of(data.clone()))],
        out: String::new(),
    };
    ex.walk(&nodes, &Val::of(data.clone()))?;
    Ok(ex.out)
}

/// A value and, when it is null or absent, how Go prints it.
#[derive(Debug, Clone, PartialEq)]
struct Val {
    v: Value,
    /// Go's printing of this null/absent value (`map[]`, `[]`, `<nil>`, `<no value>`).
    zero: Option<&'static str>,
    /// A Go struct's fields in order, for one Docker prints as `{a b}` (not a map).
    fields: Option<&'static [&'static str]>,
}

impl Val {
    fn of(v: Value) -> Val {
        Val {
            v,
            zero: None,
            fields: None,
        }
    }

    fn zero(z: &'static str) -> Val {
        Val {
            v: Value::Null,
            zero: Some(z),
            fields: None,
        }
    }
}

/// Docker fields whose Go type is a small struct, with its fields in order (`{{.HostConfig
/// .RestartPolicy}}` prints `{no 0}`).
fn struct_of(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "RestartPolicy" => Some(&["Name", "MaximumRetryCount"]),
        "LogConfig" => Some(&["Type", "Config"]),
        _ => None,
    }
}

/// How Go prints the zero value of the Docker field `name`, by its Go type.
fn zero_of(name: &str, absent: bool) -> &'static str {
    const MAPS: &[&str] = &[
        "ExposedPorts",
        "Volumes",
        "Labels",
        "Options",
        "Ports",
        "PortBindings",
        "Annotations",
        "Networks",
        "Sysctls",
        "StorageOpt",
        "DriverOpts",
        "Tmpfs",
        "Config",
        "Data",
    ];
    const SLICES: &[&str] = &[
        "Env",
        "Cmd",
        "Entrypoint",
        "Shell",
        "OnBuild",
        "Binds",
        "Mounts",
        "DiffIDs",
        "Layers",
        "RepoTags",
        "RepoDigests",
        "Args",
        "CapAdd",
        "CapDrop",
        "Dns",
        "DnsSearch",
        "DnsOptions",
        "ExtraHosts",
        "GroupAdd",
        "SecurityOpt",
        "Links",
        "Aliases",
        "Devices",
        "DeviceCgroupRules",
        "Ulimits",
        "Test",
        "Log",
    ];
    const POINTERS: &[&str] = &["Healthcheck", "Health", "StopTimeout", "Platform"];
    if MAPS.contains(&name) {
        "map[]"
    } else if SLICES.contains(&name) {
        "[]"
    } else if POINTERS.contains(&name) || !absent {
        "<nil>"
    } else {
        "<no value>"
    }
}

/// Whether a value is "true" for `if`, `with`, `and`, `or`, `not`: Go's rule (false, 0,
/// nil and empty strings, slices and maps are false).
fn truth(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Go's `%v` of a value.
fn print(v: &Val) -> String {
    match (&v.v, v.zero, v.fields) {
        (Value::Null, Some(z), _) => z.to_string(),
        (Value::Object(o), _, Some(fields)) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|f| o.get(*f).map_or_else(|| "<nil>".into(), print_value))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        (other, _, _) => print_value(other),
    }
}

fn print_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => go_float(n.as_f64().unwrap_or(0.0)),
        },
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(print_value).collect::<Vec<_>>().join(" ")
        ),
        // serde_json's maps are sorted, as Go prints maps.
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", print_element(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// A map's element: an empty object there is Docker's `struct{}` (the values of
/// `ExposedPorts` and `Volumes`), which Go prints as `{}`.
fn print_element(v: &Value) -> String {
    match v {
        Value::Object(o) if o.is_empty() => "{}".into(),
        other => print_value(other),
    }
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)` with Go's exponent form).
fn go_float(f: f64) -> String {
    if f == f.trunc() && f.abs() < 1e21 {
        return format!("{f}");
    }
    let exp = f.abs().log10().floor() as i32;
    if (-4..21).contains(&exp) {
        format!("{f}")
    } else {
        let s = format!("{f:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    }
}

/// Signals out of a `range` body.
enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec {
    vars: Vec<(String, Val)>,
    out: String,
}

impl Exec {
    fn walk(&mut self, nodes: &[Node], dot: &Val) -> Result<Flow> {
        for n in nodes {
            match self.node(n, dot)? {
                Flow::Normal => {}
                other => return Ok(other),
            }
        }
        Ok(Flow::Normal)
    }

    fn node(&mut self, n: &Node, dot: &Val) -> Result<Flow> {
        match n {
            Node::Text(t) => self.out.push_str(t),
            Node::Action(p) => {
                let v = self.pipe(p, dot)?;
                if p.decl.is_empty() {
                    self.out.push_str(&print(&v));
                }
            }
            Node::If {
                with,
                branches,
                otherwise,
            } => {
                let mark = self.vars.len();
                let mut flow = None;
                for (cond, body) in branches {
                    let v = self.pipe(cond, dot)?;
                    if truth(&v.v) {
                        let dot = if *with { v } else { dot.clone() };
                        flow = Some(self.walk(body, &dot)?);
                        break;
                    }
                }
                let flow = match flow {
                    Some(f) => f,
                    None => self.walk(otherwise, dot)?,
                };
                self.vars.truncate(mark);
                return Ok(flow);
            }
            Node::Range {
                pipe,
                body,
                otherwise,
            } => return self.range(pipe, body, otherwise, dot),
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    fn range(&mut self, p: &Pipe, body: &[Node], otherwise: &[Node], dot: &Val) -> Result<Flow> {
        let mark = self.vars.len();
        let inner = Pipe {
            decl: Vec::new(),
            assign: false,
            cmds: p.cmds.clone(),
        };
        let v = self.pipe(&inner, dot)?;
        let items: Vec<(Value, Value)> = match &v.v {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| (Value::from(i), x.clone()))
                .collect(),
            Value::Object(o) => o
                .iter()
                .map(|(k, x)| (Value::from(k.clone()), x.clone()))
                .collect(),
            Value::Number(n) if n.as_i64().is_some() => (0..n.as_i64().unwrap_or(0))
                .map(|i| (Value::from(i), Value::from(i)))
                .collect(),
            Value::Null => Vec::new(),
            other => bail!("template: range can't iterate over {}", print_value(other)),
        };
        if items.is_empty() {
            let flow = self.walk(otherwise, dot)?;
            self.vars.truncate(mark);
            return Ok(flow);
        }
        for (key, elem) in items {
            self.vars.truncate(mark);
            match p.decl.as_slice() {
                [] => {}
                [e] => self.vars.push((e.clone(), Val::of(elem.clone()))),
                [k, e] => {
                    self.vars.push((k.clone(), Val::of(key)));
                    self.vars.push((e.clone(), Val::of(elem.clone())));
                }
                _ => bail!("template: too many declarations in range"),
            }
            if let Flow::Break = self.walk(body, &Val::of(elem))? {
                break;
            }
        }
        self.vars.truncate(mark);
        Ok(Flow::Normal)
    }

    fn pipe(&mut self, p: &Pipe, dot: &Val) -> Result<Val> {
        let mut last: Option<Val> = None;
        for cmd in &p.cmds {
            last = Some(self.command(cmd, dot, last)?);
        }
        let v = last.expect("a pipeline has a command");
        for name in &p.decl {
            if p.assign {
                let slot = self
                    .vars
                    .iter_mut()
                    .rev()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| anyhow!("template: undefined variable: {name}"))?;
                slot.1 = v.clone();
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    /// One command; `piped` is the previous command's value, its last argument.
    fn command(&mut self, cmd: &[Operand], dot: &Val, piped: Option<Val>) -> Result<Val> {
        if let Operand::Ident(name) = &cmd[0] {
            let mut args = Vec::new();
            for a in &cmd[1..] {
                args.push(self.operand(a, dot)?);
            }
            args.extend(piped);
            return self.call(name, &args, &cmd[1..], dot);
        }
        if cmd.len() > 1 || piped.is_some() {
            bail!("template: can't give argument to non-function {:?}", cmd[0]);
        }
        self.operand(&cmd[0], dot)
    }

    fn operand(&mut self, op: &Operand, dot: &Val) -> Result<Val> {
        match op {
            Operand::Field(f) => fields(dot.clone(), f),
            Operand::Var(name, f) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| anyhow!("template: undefined variable: {name}"))?;
                fields(v, f)
            }
            Operand::Ident(name) => self.call(name, &[], &[], dot),
            Operand::Str(s) => Ok(Val::of(Value::from(s.clone()))),
            Operand::Int(n) => Ok(Val::of(Value::from(*n))),
            Operand::Float(n) => Ok(Val::of(Value::from(*n))),
            Operand::Bool(b) => Ok(Val::of(Value::from(*b))),
            Operand::Nil => Ok(Val::of(Value::Null)),
            Operand::Sub(p, f) => {
                let v = self.pipe(p, dot)?;
                fields(v, f)
            }
        }
    }

    fn call(&mut self, name: &str, args: &[Val], raw: &[Operand], dot: &Val) -> Result<Val> {
        // and/or stop at the first value that decides, as Go's do; their arguments are
        // evaluated here one by one for that reason.
        if name == "and" || name == "or" {
            let mut last = Val::of(Value::Null);
            for a in raw {
                last = self.operand(a, dot)?;
                if truth(&last.v) != (name == "and") {
                    return Ok(last);
                }
            }
            if args.len() > raw.len() {
                last = args[args.len() - 1].clone();
            }
            return Ok(last);
        }
        if let Some(v) = go_builtin(name, args)? {
            return Ok(v);
        }
        match docker_function(name, args)? {
            Some(v) => Ok(v),
            None => bail!("template: function {name:?} not defined"),
        }
    }
}

/// Checks a function's number of arguments, as Go reports it.
fn want(name: &str, args: &[Val], n: usize) -> Result<()> {
    if args.len() != n {
        bail!(
            "template: wrong number of args for {name}: want {n} got {}",
            args.len()
        );
    }
    Ok(())
}

fn val(v: Value) -> Result<Val> {
    Ok(Val::of(v))
}

/// Go's predefined functions (but `and` and `or`); None for another name.
fn go_builtin(name: &str, args: &[Val]) -> Result<Option<Val>> {
    let want = |n: usize| want(name, args, n);
    let s = |v: &Val| print(v);
    let v = match name {
        "not" => {
            want(1)?;
            val(Value::from(!truth(&args[0].v)))
        }
        "len" => {
            want(1)?;
            val(Value::from(match &args[0].v {
                Value::String(x) => x.len(),
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::Null => 0,
                other => bail!("template: len of {}", print_value(other)),
            }))
        }
        "index" => {
            let mut v = args
                .first()
                .cloned()
                .ok_or_else(|| anyhow!("template: index needs an argument"))?;
            for k in &args[1..] {
                v = index(&v.v, &k.v)?;
            }
            Ok(v)
        }
        "slice" => slice(args),
        "print" => val(Value::from(go_sprint(args))),
        "println" => val(Value::from(format!(
            "{}\n",
            args.iter().map(s).collect::<Vec<_>>().join(" ")
        ))),
        "printf" => {
            let fmt = args.first().map(s).unwrap_or_default();
            val(Value::from(printf(&fmt, &args[1.min(args.len())..])))
        }
        "eq" => {
            if args.len() < 2 {
                bail!("template: missing argument for comparison");
            }
            let first = &args[0].v;
            val(Value::from(args[1..].iter().any(|a| equal(first, &a.v))))
        }
        "ne" => {
            want(2)?;
            val(Value::from(!equal(&args[0].v, &args[1].v)))
        }
        "lt" | "le" | "gt" | "ge" => {
            want(2)?;
            let o = order(&args[0].v, &args[1].v)?;
            val(Value::from(match name {
                "lt" => o.is_lt(),
                "le" => o.is_le(),
                "gt" => o.is_gt(),
                _ => o.is_ge(),
            }))
        }
        "html" => val(Value::from(html_escape(&go_sprint(args)))),
        "js" => val(Value::from(js_escape(&go_sprint(args)))),
        "urlquery" => val(Value::from(url_escape(&go_sprint(args)))),
        _ => return Ok(None),
    };
    v.map(Some)
}

/// Docker's template functions; None for another name.
fn docker_function(name: &str, args: &[Val]) -> Result<Option<Val>> {
    let want = |n: usize| want(name, args, n);
    let s = |v: &Val| print(v);
    let v = match name {
        "json" => {
            want(1)?;
            val(Value::from(serde_json::to_string(&args[0].v)?))
        }
        "split" => {
            want(2)?;
            val(Value::from(
                s(&args[0])
                    .split(&s(&args[1]))
                    .map(|x| Value::from(x.to_string()))
                    .collect::<Vec<_>>(),
            ))
        }
        "join" => {
            want(2)?;
            let sep = s(&args[1]);
            val(Value::from(match &args[0].v {
                Value::Array(a) => a.iter().map(print_value).collect::<Vec<_>>().join(&sep),
                other => print_value(other),
            }))
        }
        "title" => {
            want(1)?;
            val(Value::from(title(&s(&args[0]))))
        }
        "lower" => {
            want(1)?;
            val(Value::from(s(&args[0]).to_lowercase()))
        }
        "upper" => {
            want(1)?;
            val(Value::from(s(&args[0]).to_uppercase()))
        }
        "pad" => {
            want(3)?;
            let n = |v: &Val| v.v.as_i64().unwrap_or(0).max(0) as usize;
            val(Value::from(format!(
                "{}{}{}",
                " ".repeat(n(&args[1])),
                s(&args[0]),
                " ".repeat(n(&args[2]))
            )))
        }
        "truncate" => {
            want(2)?;
            let n = args[1].v.as_i64().unwrap_or(0).max(0) as usize;
            val(Value::from(s(&args[0]).chars().take(n).collect::<String>()))
        }
        _ => return Ok(None),
    };
    v.map(Some)
}

/// `.A.B` of `v`: object keys (an absent one is Go's zero value of the field).
fn fields(mut v: Val, path: &[String]) -> Result<Val> {
    for f in path {
        v = match &v.v {
            Value::Object(o) => match o.get(f).or_else(|| field_by_go_name(o, f)) {
                Some(Value::Null) => Val::zero(zero_of(f, false)),
                Some(x) => Val {
                    fields: struct_of(f),
                    ..Val::of(x.clone())
                },
                None => Val::zero(zero_of(f, true)),
            },
            // A nil map (or pointer) has no fields: Go gives no value for it.
            Value::Null => Val::zero("<no value>"),
            other => bail!(
                "template: can't evaluate field {f} in type {}",
                type_name(other)
            ),
        };
    }
    Ok(v)
}

/// A Go struct's field reached by its Go name where the data has its JSON name (`.Status` for
/// an event's `status`, `.TimeNano` for `timeNano`): the one key equal but for case.
fn field_by_go_name<'a>(o: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    let mut found = o.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
    match (found.next(), found.next()) {
        (Some((_, v)), None) => Some(v),
        _ => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

/// `index`: an element of a slice (an error out of range) or a map (a missing key gives the
/// zero value: empty, as for Docker's `map[string]string`s).
fn index(v: &Value, k: &Value) -> Result<Val> {
    match (v, k) {
        (Value::Array(a), Value::Number(n)) => {
            let i = n.as_i64().unwrap_or(-1);
            a.get(usize::try_from(i).unwrap_or(usize::MAX))
                .cloned()
                .map(Val::of)
                .ok_or_else(|| anyhow!("template: error calling index: index out of range: {i}"))
        }
        (Value::Object(o), Value::String(key)) => {
            Ok(o.get(key).cloned().map(Val::of).unwrap_or(Val::zero("")))
        }
        (Value::Null, _) => Ok(Val::zero("")),
        (other, k) => bail!(
            "template: error calling index: cannot index {} with {}",
            type_name(other),
            print_value(k)
        ),
    }
}

fn slice(args: &[Val]) -> Result<Val> {
    let Some(first) = args.first() else {
        bail!("template: slice needs an argument");
    };
    let bound = |i: usize, len: usize| -> Result<usize> {
        match args.get(i) {
            None => Ok(if i == 1 { 0 } else { len }),
            Some(v) => {
                v.v.as_u64()
                    .map(|n| n as usize)
                    .filter(|&n| n <= len)
                    .ok_or_else(|| anyhow!("template: error calling slice: index out of range"))
            }
        }
    };
    match &first.v {
        Value::String(s) => {
            let (a, b) = (bound(1, s.len())?, bound(2, s.len())?);
            Ok(Val::of(Value::from(
                s.get(a..b).unwrap_or_default().to_string(),
            )))
        }
        Value::Array(x) => {
            let (a, b) = (bound(1, x.len())?, bound(2, x.len())?);
            Ok(Val::of(Value::from(
                x.get(a..b).unwrap_or_default().to_vec(),
            )))
        }
        other => bail!("template: can't slice item of type {}", type_name(other)),
    }
}

/// Go's `fmt.Sprint`: a space between two operands when neither is a string.
fn go_sprint(args: &[Val]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !args[i - 1].v.is_string() && !a.v.is_string() {
            out.push(' ');
        }
        out.push_str(&print(a));
    }
    out
}

/// Go's `eq` on basic values (numbers compare by value).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Result<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .ok_or_else(|| anyhow!("template: incomparable numbers")),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => bail!("template: incompatible types for comparison"),
    }
}

#[cfg(test)]
mod tests;
