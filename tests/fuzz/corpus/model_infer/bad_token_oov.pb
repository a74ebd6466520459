
mseed*
tokensINT64*
