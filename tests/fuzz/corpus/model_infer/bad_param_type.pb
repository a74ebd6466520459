
mseed"
sequence_start"
timeoutsoon*
tokensINT64*