import Testing
@Test func placeholderCS() {}
