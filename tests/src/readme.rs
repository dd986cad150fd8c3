//! The commands the README shows, so a test can check that each still runs as written.

/// Every command line of the workspace README that starts with `program` (as a word, also
/// after `target/debug/` or `cargo run -p <crate> --`), from shell blocks and inline code
/// spans, split into words with comments dropped. Lines with placeholders (`[`, `…`, `<`)
/// are left out: they describe a form, not a command.
pub fn readme_commands(program: &str) -> Vec<Vec<String>> {
    let readme = include_str!("../../README.md");
    let mut candidates: Vec<&str> = Vec::new();
    let mut in_shell = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_shell = !in_shell && line.trim_start().trim_start_matches('`').starts_with("sh");
            continue;
        }
        if in_shell {
            candidates.push(line);
        } else {
            candidates.extend(line.split('`').skip(1).step_by(2));
        }
    }
    candidates
        .into_iter()
        .filter_map(|text| {
            let text = text.split(" #").next().unwrap_or(text).trim();
            let rest = text
                .strip_prefix("target/debug/")
                .unwrap_or(text)
                .strip_prefix(program)?;
            // The bare program name is prose, not a command.
            let rest = rest.strip_prefix(' ')?;
            if rest.contains(['[', '…', '<']) {
                return None;
            }
            let mut words = vec![program.to_string()];
            words.extend(rest.split_whitespace().map(str::to_string));
            Some(words)
        })
        .collect()
}

/// Like [`readme_commands`], for `cargo run -p <krate> -- …` lines: the arguments after
/// `--`, with `program` as the first word.
pub fn readme_cargo_runs(krate: &str, program: &str) -> Vec<Vec<String>> {
    let readme = include_str!("../../README.md");
    let marker = format!("cargo run -p {krate} -- ");
    readme
        .split('`')
        .filter_map(|span| span.trim().strip_prefix(&marker))
        .filter(|rest| !rest.contains(['[', '…', '<']))
        .map(|rest| {
            let mut words = vec![program.to_string()];
            words.extend(rest.split_whitespace().map(str::to_string));
            words
        })
        .collect()
}
