//! Prints the ExportJob CRD (the same output as `spillway crd`).
fn main() {
    print!("{}", spillway_api::crd::crd_yaml());
}
