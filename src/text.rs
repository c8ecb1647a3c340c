//! Bounding text that people read in annotations, warnings and Events.

/// At most `max` bytes of `s`, cut on a character boundary, with `…` when anything was cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_a_character_boundary() {
        let cases = [
            ("", 3, ""),
            ("abc", 3, "abc"),
            ("abcd", 3, "abc…"),
            // é is two bytes: a cut inside it moves back to the character before.
            ("aéb", 2, "a…"),
            ("aéb", 3, "aé…"),
            ("ééé", 0, "…"),
        ];
        for (s, max, want) in cases {
            assert_eq!(truncate(s, max), want, "{s:?} {max}");
        }
    }
}
