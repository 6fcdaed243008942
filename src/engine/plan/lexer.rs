//! SQL text as tokens, as far as the planner reads it: names (quoted or
//! not), string constants, parentheses, `;`, comments and everything else,
//! each with where it stands in the text. Pure. Used to check that a spec
//! expression is one piece ([`super::changes::spec_text`]) and to follow
//! column names through renames ([`super::changes::rebind`]).

use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// An unquoted word: a name, a keyword or a number's digits.
    Word,
    /// A `"quoted"` name.
    QuotedName,
    /// A string constant (`'..'`, `E'..'`, `$tag$..$tag$`).
    Text,
    Open,
    Close,
    Semicolon,
    /// `--` or `/* */`.
    Comment,
    /// An operator or other punctuation, one character.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub token: Token,
    /// Byte range in the text.
    pub at: Range<usize>,
}

/// Reads `text` into pieces, or says what is left open.
pub fn pieces(text: &str) -> Result<Vec<Piece>, String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let byte = |i: usize| chars.get(i).map_or(text.len(), |c| c.0);
    let at = |i: usize| chars.get(i).map(|c| c.1);
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        let start = i;
        let next = at(i + 1);
        let token = match c {
            _ if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '-' if next == Some('-') => {
                while at(i).is_some_and(|c| c != '\n') {
                    i += 1;
                }
                Token::Comment
            }
            '/' if next == Some('*') => {
                i = find(&chars, i + 2, "*/").ok_or("leaves a comment open")? + 2;
                Token::Comment
            }
            ';' | '(' | ')' => {
                i += 1;
                match c {
                    ';' => Token::Semicolon,
                    '(' => Token::Open,
                    _ => Token::Close,
                }
            }
            '\'' => {
                i = quoted_end(&chars, i + 1, '\'', false).ok_or("leaves a string constant open")?;
                Token::Text
            }
            'e' | 'E' if next == Some('\'') && starts_token(&chars, i) => {
                i = quoted_end(&chars, i + 2, '\'', true).ok_or("leaves a string constant open")?;
                Token::Text
            }
            '"' => {
                i = quoted_end(&chars, i + 1, '"', false).ok_or("leaves a quoted name open")?;
                Token::QuotedName
            }
            '$' if starts_token(&chars, i) && dollar_tag(&chars, i).is_some() => {
                let tag = dollar_tag(&chars, i).expect("checked");
                let end = find(&chars, i + tag.chars().count(), &tag).ok_or("leaves a dollar-quoted string open")?;
                i = end + tag.chars().count();
                Token::Text
            }
            _ if c.is_alphanumeric() || c == '_' => {
                while at(i).is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                    i += 1;
                }
                Token::Word
            }
            _ => {
                i += 1;
                Token::Other
            }
        };
        out.push(Piece { token, at: byte(start)..byte(i) });
    }
    Ok(out)
}

/// Whether position `i` starts a token (a letter right before it would make
/// `e'` or `$` part of a word: `some$var`, `mye'`).
fn starts_token(chars: &[(usize, char)], i: usize) -> bool {
    i == 0 || !(chars[i - 1].1.is_alphanumeric() || chars[i - 1].1 == '_' || chars[i - 1].1 == '$')
}

/// The index just past the closing `quote` of a quoted piece whose body
/// starts at `from`; a doubled quote is one quote inside, and with
/// `backslash` a backslash escapes the next character.
fn quoted_end(chars: &[(usize, char)], from: usize, quote: char, backslash: bool) -> Option<usize> {
    let mut i = from;
    while let Some(&(_, c)) = chars.get(i) {
        match c {
            '\\' if backslash => i += 2,
            _ if c == quote && chars.get(i + 1).map(|c| c.1) == Some(quote) => i += 2,
            _ if c == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The `$tag$` opening at `i`, when it is one (`$1` is a parameter).
fn dollar_tag(chars: &[(usize, char)], i: usize) -> Option<String> {
    let mut j = i + 1;
    while chars.get(j).is_some_and(|c| c.1.is_alphanumeric() || c.1 == '_') {
        j += 1;
    }
    let first = chars.get(i + 1).map(|c| c.1);
    if chars.get(j).map(|c| c.1) != Some('$') || first.is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(chars[i..=j].iter().map(|c| c.1).collect())
}

fn find(chars: &[(usize, char)], from: usize, needle: &str) -> Option<usize> {
    let needle: Vec<char> = needle.chars().collect();
    (from..chars.len()).find(|&i| chars[i..].iter().map(|c| c.1).take(needle.len()).eq(needle.iter().copied()))
}

/// The name a word or quoted name stands for: folded to lower case unless quoted.
pub fn name_of(text: &str, piece: &Piece) -> Option<String> {
    let raw = &text[piece.at.clone()];
    match piece.token {
        Token::Word => Some(raw.to_lowercase()),
        Token::QuotedName => Some(raw[1..raw.len() - 1].replace("\"\"", "\"")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Token, &str)> {
        pieces(text).unwrap().into_iter().map(|p| (p.token, &text[p.at])).collect()
    }

    #[test]
    fn names_strings_and_punctuation_are_told_apart() {
        assert_eq!(
            kinds("(lower(\"Note\") || 'a''b') -- x"),
            [
                (Token::Open, "("),
                (Token::Word, "lower"),
                (Token::Open, "("),
                (Token::QuotedName, "\"Note\""),
                (Token::Close, ")"),
                (Token::Other, "|"),
                (Token::Other, "|"),
                (Token::Text, "'a''b'"),
                (Token::Close, ")"),
                (Token::Comment, "-- x"),
            ]
        );
        assert_eq!(
            kinds("$q$ a;b $q$ $1 E'\\''"),
            [(Token::Text, "$q$ a;b $q$"), (Token::Other, "$"), (Token::Word, "1"), (Token::Text, "E'\\''")]
        );
        assert_eq!(kinds("été"), [(Token::Word, "été")]);
        assert!(pieces("'open").is_err());
        assert!(pieces("/* open").is_err());
        let text = "\"A\"\"b\" Qty";
        let names: Vec<String> = pieces(text).unwrap().iter().filter_map(|p| name_of(text, p)).collect();
        assert_eq!(names, ["A\"b", "qty"]);
    }
}
