import Testing
@Test func placeholderWire() {}
