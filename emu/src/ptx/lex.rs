//! PTX text to tokens, each with its line. Opcodes with their modifiers
//! (`ld.global.nc.v4.f32`), registers (`%rd21`, `%tid.x`), labels (`$L__BB0_2`),
//! directives (`.reg`) and numbers (`0f3F800000`, `-1` is `-` then `1`) are single
//! word tokens; everything else is one punctuation character.

use super::LoadError;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Word(String),
    Str(String),
    Punct(char),
}

#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    pub line: usize,
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '%' | '$')
}

pub fn lex(text: &str) -> Result<Vec<Token>, LoadError> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut line = 1;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                // PTX strings are one line. Reading on would hide the newlines and every
                // later error would name a line too early.
                if chars[i] == '\n' {
                    return Err(LoadError { line, message: "unterminated string".into() });
                }
                i += 1;
            }
            out.push(Token { tok: Tok::Str(chars[start..i.min(chars.len())].iter().collect()), line });
            i += 1;
        } else if word_char(c) {
            let start = i;
            while i < chars.len() && word_char(chars[i]) {
                i += 1;
            }
            out.push(Token { tok: Tok::Word(chars[start..i].iter().collect()), line });
        } else if "{}()[],;:+-|!@<>=".contains(c) {
            out.push(Token { tok: Tok::Punct(c), line });
            i += 1;
        } else {
            return Err(LoadError { line, message: format!("unexpected character {c:?}") });
        }
    }
    Ok(out)
}
