//! Subcommands of the CLI surface whose libraries are not built yet: they parse any
//! arguments and exit with status 2 and a message naming the issue that will build them.

/// Arguments of a subcommand that is not built yet (accepted and ignored).
#[derive(clap::Args, Debug)]
pub(crate) struct Rest {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

/// The error of an unbuilt subcommand.
#[derive(Debug)]
pub(crate) struct NotBuilt {
    command: &'static str,
    issue: u32,
}

impl std::fmt::Display for NotBuilt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`em {}` is not built yet (planned in issue #{}); `em info` works today",
            self.command, self.issue
        )
    }
}

impl NotBuilt {
    /// The error for `em COMMAND`, planned in issue `issue`.
    pub(crate) fn new(command: &'static str, issue: u32) -> Self {
        Self { command, issue }
    }
}

pub(crate) fn fail(command: &'static str, issue: u32) -> anyhow::Result<()> {
    Err(NotBuilt::new(command, issue).into())
}

impl std::error::Error for NotBuilt {}
