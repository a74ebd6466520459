
mseed*
inputINT64*