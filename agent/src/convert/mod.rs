//! `my-agent convert FILE.conf [-o FILE.yml] [--partial]`: a td-agent or
//! Fluentd configuration as my-agent's. The syntax is read by
//! `fluentd_conf`, each plugin is mapped by `mapping`, and the result is
//! written by `yaml_out`. What cannot be mapped is an error naming its file
//! and line (exit 1), or with `--partial` a comment in the output (exit 3).

mod fluentd_conf;
mod mapping;
mod yaml_out;

use std::path::Path;

/// Exit status when `--partial` left parts unconverted.
const PARTIAL: i32 = 3;

pub fn run(input: &Path, output: Option<&Path>, partial: bool, state_dir: &str) -> i32 {
    let root = match fluentd_conf::parse_file(input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let mut converted = mapping::convert(&root, state_dir);
    let unmapped = converted.unmapped.len();
    if unmapped > 0 && !partial {
        for u in &converted.unmapped {
            eprintln!("error: {u}");
        }
        eprintln!(
            "error: {unmapped} part(s) of {} cannot be converted; --partial writes the rest with them as comments (exit {PARTIAL})",
            input.display()
        );
        return 1;
    }
    for u in &converted.unmapped {
        converted.doc.comment(format!(
            "NOT CONVERTED {}",
            u.to_string().replace('\n', " ")
        ));
        eprintln!("warning: not converted: {u}");
    }
    let text = yaml_out::to_string(&converted.doc);
    let written = match output {
        Some(path) => std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|e| format!("stdout: {e}"))
        }
    };
    if let Err(e) = written {
        eprintln!("error: {e}");
        return 1;
    }
    if unmapped > 0 {
        PARTIAL
    } else {
        0
    }
}
