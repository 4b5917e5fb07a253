// The clocks and the error vocabulary are CountersignCore's; every user of Policy has them.
@_exported import CountersignCore
