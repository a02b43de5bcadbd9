//! Compiles proto/guest.proto with protox (a pure-Rust protobuf compiler, so
//! no protoc is needed) into the message types, the server and the client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/guest.proto");
    let fds = protox::compile(["guest.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
