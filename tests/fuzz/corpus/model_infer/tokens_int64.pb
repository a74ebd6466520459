
mseed*
tokensINT64*2
logits