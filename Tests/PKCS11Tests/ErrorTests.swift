import PKCS11
import Testing

@Suite("Errors name the function and the return code")
struct ErrorTests {
    @Test("a known code prints its name and hex")
    func knownCode() {
        let error = PKCS11Error(function: "C_Login", code: .pinIncorrect)
        #expect(error.description == "C_Login failed: CKR_PIN_INCORRECT (0xA0)")
        #expect(ReturnCode(rawValue: 0x191).description == "CKR_CRYPTOKI_ALREADY_INITIALIZED (0x191)")
    }

    @Test("vendor-defined and unknown codes keep their hex")
    func unknownCodes() {
        #expect(ReturnCode(rawValue: 0x8000_0123).name == nil)
        #expect(ReturnCode(rawValue: 0x8000_0123).description == "vendor-defined return code (0x80000123)")
        #expect(ReturnCode(rawValue: 0x7777).description == "unknown return code (0x7777)")
        #expect(
            PKCS11Error(function: "C_Sign", code: ReturnCode(rawValue: 0x8000_0001)).description
                == "C_Sign failed: vendor-defined return code (0x80000001)"
        )
    }

    @Test("every code from 0 to 0x200 prints without trapping")
    func allCodesPrint() {
        for raw in UInt(0)...0x200 {
            #expect(ReturnCode(rawValue: raw).description.hasSuffix(")"))
        }
    }

    @Test("a PIN never prints")
    func pinIsRedacted() {
        let pin = PIN("1234-secret")
        #expect(pin.description == "PIN(redacted)")
        #expect("\(pin)" == "PIN(redacted)")
        #expect(String(reflecting: pin) == "PIN(redacted)")
        var dumped = ""
        dump(pin, to: &dumped)
        #expect(!dumped.contains("1234-secret"))
        #expect(pin.count == 11)
        pin.withUnsafeBytes { #expect(Array($0) == Array("1234-secret".utf8)) }
    }
}
