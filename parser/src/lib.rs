//! strata-parser: Dockerfile text → AST, with BuildKit's semantics.
//!
//! Main types: [`node::RawDockerfile`] (the line-level parse: strings only, exactly what
//! BuildKit's parser produces), [`Dockerfile`] / [`Instruction`] / [`Kind`] (the typed AST, flags
//! checked, values still unexpanded), [`shell::Lexer`] (the variable expander, reporting which
//! variables were used and unset) and [`ignore::Matcher`] (`.dockerignore`).
//!
//! Key design decision: two layers. The raw layer reproduces BuildKit byte for byte (it is tested
//! against BuildKit's own corpus), so quirks of continuations, comments, escapes and JSON
//! fall-back are BuildKit's; the typed layer on top is where strata adds validation and
//! positions. The line structure is a hand-written pre-pass (its rules are stateful: the escape
//! directive changes them mid-file); the value sub-languages (heredoc markers, durations,
//! chmod, ports, mount fields) are a pest grammar. No I/O, no expansion while parsing.

pub mod error;
pub mod grammar;
pub mod ignore;
pub mod instructions;
pub mod node;
pub mod shell;

pub use error::{ParseError, Pos};
pub use instructions::{
    parse_dockerfile, parse_instruction, CommandLine, Dockerfile, Instruction, Kind,
};
