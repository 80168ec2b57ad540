//! Expected outputs are what Go's `text/template` (with Docker's functions) prints for the
//! same template over the same data.

use super::render;
use serde_json::json;

fn data() -> serde_json::Value {
    json!({
        "Id": "abc",
        "Name": "/web",
        "Count": 3,
        "Ratio": 0.5,
        "Up": true,
        "Config": {
            "Env": ["A=1", "B=2"],
            "Labels": {"b": "2", "a": "1"},
            "ExposedPorts": null,
            "Healthcheck": null,
            "Cmd": ["sh", "-c", "true"],
            "Empty": []
        },
        "HostConfig": {"RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}},
        "List": []
    })
}

fn r(t: &str) -> String {
    render(t, &data()).unwrap_or_else(|e| format!("ERR {e}"))
}

#[test]
fn fields_and_go_printing() {
    assert_eq!(
        r("{{.Name}} {{.Count}} {{.Ratio}} {{.Up}}"),
        "/web 3 0.5 true"
    );
    assert_eq!(r("{{.Config.Env}}"), "[A=1 B=2]");
    assert_eq!(r("{{.Config.Labels}}"), "map[a:1 b:2]");
    assert_eq!(
        render("{{.P}} {{.E}}", &json!({"P": {"80/tcp": {}}, "E": {}})).unwrap(),
        "map[80/tcp:{}] map[]"
    );
    assert_eq!(r("{{.HostConfig.RestartPolicy}}"), "{no 0}");
    assert_eq!(r("{{.HostConfig.RestartPolicy.Name}}"), "no");
    // Null or absent: Go's zero value of the field's type.
    assert_eq!(r("{{.Config.ExposedPorts}}"), "map[]");
    assert_eq!(r("{{.Config.Healthcheck}}"), "<nil>");
    assert_eq!(r("{{.Config.Entrypoint}}"), "[]");
    assert_eq!(r("{{.Config.Nope}}"), "<no value>");
    assert_eq!(r("{{.Config.ExposedPorts.x}}"), "<no value>");
    assert_eq!(r("{{json .Config.ExposedPorts}}"), "null");
    assert!(r("{{.}}").starts_with("map[Config:map[Cmd:[sh -c true]"));
    assert_eq!(
        r("{{.Name.Bad}}"),
        "ERR template: can't evaluate field Bad in type string"
    );
}

#[test]
fn control_structures() {
    assert_eq!(
        r("{{- range .Config.Env -}}{{- println . -}}{{- end -}}"),
        "A=1\nB=2\n"
    );
    assert_eq!(
        r("{{range $i, $e := .Config.Env}}{{$i}}:{{$e}} {{end}}"),
        "0:A=1 1:B=2 "
    );
    assert_eq!(
        r("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}"),
        "a=1;b=2;"
    );
    assert_eq!(r("{{range .List}}x{{else}}none{{end}}"), "none");
    assert_eq!(
        r("{{range .Config.Env}}{{if eq . \"B=2\"}}{{break}}{{end}}{{.}}{{end}}"),
        "A=1"
    );
    assert_eq!(
        r("{{range .Config.Env}}{{if eq . \"A=1\"}}{{continue}}{{end}}{{.}}{{end}}"),
        "B=2"
    );
    assert_eq!(r("{{if .Up}}up{{else}}down{{end}}"), "up");
    assert_eq!(r("{{if .List}}a{{else if .Count}}b{{else}}c{{end}}"), "b");
    assert_eq!(r("{{with .Config.Labels}}{{.a}}{{end}}"), "1");
    assert_eq!(r("{{with .List}}x{{else with .Name}}{{.}}{{end}}"), "/web");
    assert_eq!(r("{{with .Config.Nope}}x{{else}}no{{end}}"), "no");
    assert_eq!(r("{{$x := .Name}}{{$x}}{{$x = \"y\"}}{{$x}}"), "/weby");
    assert_eq!(r("{{range .Config.Cmd}}{{$.Name}}{{end}}"), "/web/web/web");
    assert_eq!(r("a {{- /* gone */ -}} b"), "ab");
    assert_eq!(r("a  {{- .Count}}  {{.Count -}}  b"), "a3  3b");
    assert_eq!(r("{{range 3}}{{.}}{{end}}"), "012");
}

#[test]
fn builtin_functions() {
    assert_eq!(
        r("{{index .Config.Labels \"a\"}}|{{index .Config.Labels \"zz\"}}|"),
        "1||"
    );
    assert_eq!(r("{{index .Config.Env 1}}"), "B=2");
    assert_eq!(
        r("{{len .Config.Env}} {{len .Name}} {{len .Config.Labels}}"),
        "2 4 2"
    );
    assert_eq!(r("{{if and .Up (gt .Count 2)}}big{{end}}"), "big");
    assert_eq!(r("{{or .List .Name}}"), "/web");
    assert_eq!(r("{{and .Name .List}}"), "[]");
    assert_eq!(r("{{not .Up}}"), "false");
    assert_eq!(
        r("{{eq .Count 1 2 3}} {{ne .Name \"/web\"}} {{lt 1 2}} {{ge \"b\" \"a\"}}"),
        "true false true true"
    );
    assert_eq!(r("{{printf \"%s-%d|%5s|%-5s|%05d|%.2f|%q|%v|%x\" .Name .Count \"ab\" \"cd\" 42 3.14159 \"hi\" .Up 255}}"),
        "/web-3|   ab|cd   |00042|3.14|\"hi\"|true|ff");
    assert_eq!(r("{{print \"a\" \"b\" 1 2 \"c\"}}"), "ab1 2c");
    assert_eq!(r("{{.Count | printf \"%03d\"}}"), "003");
    assert_eq!(r("{{slice .Name 1 3}} {{slice .Config.Env 1}}"), "we [B=2]");
    assert_eq!(
        r("{{html \"<a&b>\"}} {{urlquery \"a b&c\"}} {{js \"it's\"}}"),
        "&lt;a&amp;b&gt; a+b%26c it\\'s"
    );
    assert_eq!(r("{{(index .Config.Env 0)}}"), "A=1");
    assert_eq!(r("{{(.HostConfig).RestartPolicy.Name}}"), "no");
    assert_eq!(
        r("{{nosuch .Name}}"),
        "ERR template: function \"nosuch\" not defined"
    );
}

#[test]
fn dockers_functions() {
    assert_eq!(r("{{json .Config.Env}}"), r#"["A=1","B=2"]"#);
    assert_eq!(
        r("{{json .HostConfig}}"),
        r#"{"RestartPolicy":{"MaximumRetryCount":0,"Name":"no"}}"#
    );
    assert_eq!(r("{{join .Config.Env \",\"}}"), "A=1,B=2");
    assert_eq!(r("{{split \"a:b:c\" \":\"}}"), "[a b c]");
    assert_eq!(
        r("{{upper .Name}} {{lower \"AB\"}} {{title \"hello world\"}}"),
        "/WEB ab Hello World"
    );
    assert_eq!(r("{{pad .Id 1 2}}|{{truncate .Name 2}}"), " abc  |/w");
    assert_eq!(r("{{range split \"x y\" \" \"}}<{{.}}>{{end}}"), "<x><y>");
}

#[test]
fn syntax_errors_say_what() {
    assert_eq!(r("{{.Name"), "ERR template: unclosed action");
    assert_eq!(r("{{if .Up}}x"), "ERR template: missing {{end}}");
    assert_eq!(r("{{end}}"), "ERR template: unexpected {{end}}");
    assert_eq!(r("{{\"abc}}"), "ERR template: unterminated quoted string");
    assert_eq!(r("{{$nope}}"), "ERR template: undefined variable: $nope");
}
