use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum IrError {
    /// A node whose operands do not fit its op; `node` is its index (`%N` in `.kir`).
    #[error("node %{node} ({op}): {msg}")]
    Node {
        node: usize,
        op: &'static str,
        msg: String,
    },
    #[error("line {line}, column {col}: {msg}")]
    Parse {
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("graph: {0}")]
    Graph(String),
    #[error("interpreter: {0}")]
    Interp(String),
}
