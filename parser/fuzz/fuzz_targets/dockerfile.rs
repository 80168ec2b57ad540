#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = strata_parser::parse_dockerfile("Dockerfile", s);
        let env: Vec<(String, String)> = vec![("A".into(), "b".into())];
        let _ = strata_parser::shell::Lexer::default().process_word(s, &env);
    }
});
