//! Bitbucket's branch patterns: `*` matches within a path segment, `**` across segments, and
//! `{a,b}` lists alternatives; everything else matches itself.

/// Alternatives one pattern may expand to: beyond this a pattern matches nothing (no real
/// branch pattern comes near it; a hostile one cannot make matching slow).
const MAX_ALTERNATIVES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `*`: any run of characters but `/`.
    Star,
    /// `**`: any run of characters.
    Stars,
}

/// `pattern` with its `{a,b}` groups expanded, innermost alternatives kept in order; `None`
/// when it expands past [`MAX_ALTERNATIVES`] or its braces do not balance.
fn expand(pattern: &str) -> Option<Vec<String>> {
    let Some(open) = pattern.find('{') else {
        return Some(vec![pattern.to_owned()]);
    };
    // The matching close, counting nested groups.
    let mut depth = 0;
    let mut close = None;
    for (i, c) in pattern[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close?;
    let inner = &pattern[open + 1..close];
    // Split the group at its top-level commas.
    let mut choices = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                choices.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    choices.push(&inner[start..]);
    let mut out = Vec::new();
    for choice in choices {
        let rest = format!("{}{choice}{}", &pattern[..open], &pattern[close + 1..]);
        out.extend(expand(&rest)?);
        if out.len() > MAX_ALTERNATIVES {
            return None;
        }
    }
    Some(out)
}

fn tokens(pattern: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                Token::Stars
            }
            '*' => Token::Star,
            other => Token::Literal(other),
        });
    }
    out
}

/// Whether `tokens` match all of `name`: dynamic programming over (token, character), so
/// the time is their product whatever the stars.
fn matches_tokens(tokens: &[Token], name: &[char]) -> bool {
    // reachable[j]: the tokens so far can match name[..j].
    let mut reachable = vec![false; name.len() + 1];
    reachable[0] = true;
    for token in tokens {
        let mut next = vec![false; name.len() + 1];
        match token {
            Token::Literal(c) => {
                for j in 0..name.len() {
                    next[j + 1] = reachable[j] && name[j] == *c;
                }
            }
            Token::Star | Token::Stars => {
                for j in 0..=name.len() {
                    next[j] = reachable[j]
                        || (j > 0 && next[j - 1] && (*token == Token::Stars || name[j - 1] != '/'));
                }
            }
        }
        reachable = next;
    }
    reachable[name.len()]
}

/// Whether branch (or tag) `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    expand(pattern).is_some_and(|alternatives| {
        alternatives
            .iter()
            .any(|alternative| matches_tokens(&tokens(alternative), &name))
    })
}

/// How specific a pattern is: the characters it fixes. Among the patterns a name matches,
/// the most specific wins (`feature/*` over `**`).
pub fn specificity(pattern: &str) -> usize {
    pattern
        .chars()
        .filter(|c| !matches!(c, '*' | '{' | '}' | ','))
        .count()
}

/// Whether `key` is a pattern rather than a name.
pub fn is_pattern(key: &str) -> bool {
    key.contains(['*', '{'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_stay_within_a_segment_and_double_stars_cross() {
        assert!(matches("feature/*", "feature/login"));
        assert!(!matches("feature/*", "feature/a/b"));
        assert!(matches("feature/**", "feature/a/b"));
        assert!(matches("**", "any/thing/at/all"));
        assert!(matches("*", "main"));
        assert!(!matches("*", "release/1.0"));
        assert!(matches("release-*-rc", "release-1.2-rc"));
        assert!(!matches("release-*-rc", "release-1.2"));
        assert!(matches("main", "main"));
        assert!(!matches("main", "mainline"));
    }

    #[test]
    fn braces_list_alternatives_even_nested() {
        assert!(matches("{main,develop}", "develop"));
        assert!(!matches("{main,develop}", "staging"));
        assert!(matches("{feature,bugfix}/*", "bugfix/x"));
        assert!(matches("{a,b{c,d}}", "bd"));
        assert!(!matches("{a,b", "a"), "unbalanced: matches nothing");
    }

    #[test]
    fn a_hostile_pattern_matches_nothing_and_costs_little() {
        let bomb = "{a,b}".repeat(40);
        assert!(!matches(&bomb, "ab"));
        let stars = "*".repeat(2_000);
        assert!(matches(&stars, &"x".repeat(2_000)));
    }

    #[test]
    fn fixed_characters_make_a_pattern_specific() {
        assert!(specificity("feature/*") > specificity("**"));
        assert!(specificity("feature/bb-*") > specificity("feature/*"));
        assert!(is_pattern("feature/*") && is_pattern("{a,b}") && !is_pattern("main"));
    }
}
