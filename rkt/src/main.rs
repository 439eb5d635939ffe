mod extract;
mod image;
mod store;
#[cfg(test)]
mod testutil;
fn main() {}
