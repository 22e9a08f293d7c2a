"""SpeechMiner index backup shipping: primary DC -> backup DC, verified, published in one step."""
