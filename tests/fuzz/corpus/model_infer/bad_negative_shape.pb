
mseed*"
tokensINT64ÿÿÿÿÿÿÿÿÿ*