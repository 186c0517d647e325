//! The runner's commands (`add`, `stop 1`, `kill 2`, `start 2`, `rate 500`, `get KEY`, `quit`),
//! parsed from
//! a typed line.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerCommand {
    /// Start the next instance (kstreams-count-N) on its own state dir and port.
    Add,
    /// Stop an instance cleanly (SIGTERM: commit, close stores, leave the group).
    Stop(usize),
    /// Kill an instance hard (SIGKILL: nothing flushed, its partitions wait for the session timeout).
    Kill(usize),
    /// Start a stopped or killed instance again on its own state dir.
    Start(usize),
    /// Change the load generator's rate, in records per second.
    Rate(u64),
    /// Ask an instance (each in turn) for a key's count: which answered, which owns it.
    Get(String),
    Help,
    Quit,
}

pub const HELP: &str =
    "commands: add | stop N | kill N | start N | rate R (records/s) | get KEY | help | quit";

#[derive(Debug, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {HELP}", self.0)
    }
}

impl std::error::Error for ParseError {}

impl std::str::FromStr for RunnerCommand {
    type Err = ParseError;

    fn from_str(line: &str) -> Result<Self, ParseError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |what: &str| -> Result<u64, ParseError> {
            let Some(text) = words.get(1) else {
                return Err(ParseError(format!("`{}` needs {what}", words[0])));
            };
            // Accept the instance name as well as its index: `stop kstreams-count-1`.
            let digits = text.rsplit('-').next().unwrap_or(text);
            digits
                .parse()
                .map_err(|_| ParseError(format!("`{text}` is not {what}")))
        };
        let instance = |what| number(what).map(|n| n as usize);
        match words.first().copied() {
            None => Err(ParseError("empty command".into())),
            Some("add" | "a" | "+") => Ok(Self::Add),
            Some("stop" | "s") => instance("an instance number").map(Self::Stop),
            Some("kill" | "k") => instance("an instance number").map(Self::Kill),
            Some("start" | "restart" | "r") => instance("an instance number").map(Self::Start),
            Some("rate") => number("a rate in records per second").map(Self::Rate),
            Some("get" | "g") => match words.get(1..).filter(|rest| !rest.is_empty()) {
                Some(key) => Ok(Self::Get(key.join(" "))),
                None => Err(ParseError("`get` needs a key".into())),
            },
            Some("help" | "h" | "?") => Ok(Self::Help),
            Some("quit" | "q" | "exit") => Ok(Self::Quit),
            Some(other) => Err(ParseError(format!("unknown command `{other}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!("add".parse(), Ok(RunnerCommand::Add));
        assert_eq!(" stop 1 ".parse(), Ok(RunnerCommand::Stop(1)));
        assert_eq!("kill kstreams-count-2".parse(), Ok(RunnerCommand::Kill(2)));
        assert_eq!("start 0".parse(), Ok(RunnerCommand::Start(0)));
        assert_eq!("rate 500".parse(), Ok(RunnerCommand::Rate(500)));
        assert_eq!(
            "get word-00042".parse(),
            Ok(RunnerCommand::Get("word-00042".into()))
        );
        assert_eq!("q".parse(), Ok(RunnerCommand::Quit));
    }

    #[test]
    fn explains_bad_commands() {
        let error = "stop".parse::<RunnerCommand>().unwrap_err().to_string();
        assert!(error.contains("`stop` needs an instance number"), "{error}");
        let error = "rate fast"
            .parse::<RunnerCommand>()
            .unwrap_err()
            .to_string();
        assert!(error.contains("`fast` is not a rate"), "{error}");
        let error = "jump".parse::<RunnerCommand>().unwrap_err().to_string();
        assert!(error.contains("unknown command `jump`") && error.contains("commands:"));
    }
}
