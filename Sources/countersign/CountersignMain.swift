import ArgumentParser
import CountersignCLI

@main
struct CountersignMain {
    static func main() async {
        await CountersignCommand.main()
    }
}
